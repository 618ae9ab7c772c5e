'use strict';
// Reads the test vectors out of docs/signing.md, the specification this bank implements.

const fs = require('node:fs');
const path = require('node:path');

const SIGNING_MD = path.resolve(__dirname, '..', '..', '..', 'docs', 'signing.md');

/** Every ```text block of docs/signing.md that starts with `vector:`, as {key: value}. */
function vectorsFromDoc(file = SIGNING_MD) {
  const text = fs.readFileSync(file, 'utf8');
  const blocks = [...text.matchAll(/```text\n(vector:[\s\S]*?)```/g)].map((m) => m[1]);
  return blocks.map((block) => {
    const v = {};
    let key = null;
    for (const line of block.split('\n')) {
      if (!line.trim()) continue;
      const m = /^(\S+):\s*(.*)$/.exec(line);
      if (m && !line.startsWith(' ')) {
        key = m[1];
        v[key] = m[2] === '(empty)' ? '' : m[2].trim();
      } else if (key) {
        v[key] += line.trim(); // hex wrapped over several lines
      }
    }
    return v;
  });
}

module.exports = { SIGNING_MD, vectorsFromDoc };
