// The `bitnet` process: heap tuning, then the command in argv, its exit code as the process's.
// bin/bitnet.js runs this module from src/ in a checkout and from lib/ in an installed package.
import { keepYoungGenerationSmall } from '../adapters/node-heap.ts';
import { main } from './main.ts';

export function runCommandLine(argv: string[] = process.argv.slice(2)): void {
  keepYoungGenerationSmall(); // before the model's metadata and tokenizer are built (node-heap.ts)
  main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
