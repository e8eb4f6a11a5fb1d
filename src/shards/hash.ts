/** SHA-256 through Web Crypto (Node 22, Workers, browsers alike). */

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  let s = '';
  for (const b of new Uint8Array(d)) s += b.toString(16).padStart(2, '0');
  return s;
}
