// Writes the embedded demo model that `npm start` serves when no model is given: a tiny synthetic
// BitNet model with RANDOM WEIGHTS (its text is noise). Skipped when the file exists.
import { DEMO_MODEL_PATH, writeDemoModel } from '../src/cli/serve.ts';

const existed = (await import('node:fs')).existsSync(DEMO_MODEL_PATH);
const path = await writeDemoModel();
console.error(existed ? `demo model (random weights) present: ${path}` : `wrote demo model (random weights): ${path}`);
