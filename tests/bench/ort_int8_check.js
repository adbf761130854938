#!/usr/bin/env node
// Sanity of ONNX Runtime's int8 peer: runs the fp32 model and its QDQ
// version (make_qdq.py) on the same preprocessed photos, writes both
// logits as .npy for int8_report.py, and prints one JSON line with the
// kernels ONNX Runtime ran for the QDQ model (from its profile, after its
// graph optimizations: a fused QDQ conv shows as QLinearConv).
//
// usage: node ort_int8_check.js --fp32 FILE --int8 FILE --photos N.npy
//        --out DIR [--threads 2] [--modules DIR]
'use strict';

const fs = require('node:fs');
const path = require('node:path');

function parseArgs(argv) {
  const o = { fp32: null, int8: null, photos: null, out: null, threads: 2, modules: null };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in o) || argv[i + 1] === undefined) {
      console.error(`ort_int8_check: bad argument ${argv[i]}`);
      process.exit(2);
    }
    o[k] = k === 'threads' ? parseInt(argv[i + 1], 10) : argv[i + 1];
  }
  for (const k of ['fp32', 'int8', 'photos', 'out']) {
    if (!o[k]) {
      console.error(`ort_int8_check: --${k} is required`);
      process.exit(2);
    }
  }
  return o;
}

// A little-endian float32 C-order .npy: { dims, data }.
function readNpy(file) {
  const b = fs.readFileSync(file);
  if (b.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${file}: not .npy`);
  const major = b[6];
  const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + hlen;
  const header = b.toString('latin1', major === 1 ? 10 : 12, start);
  if (!/'descr': '<f4'/.test(header) || /'fortran_order': True/.test(header)) {
    throw new Error(`${file}: needs little-endian float32 in C order: ${header}`);
  }
  const dims = header.match(/'shape': \(([^)]*)\)/)[1].split(',').filter((s) => s.trim()).map(Number);
  const data = new Float32Array(b.buffer.slice(b.byteOffset + start, b.byteOffset + b.length));
  return { dims, data };
}

function writeNpy(file, dims, data) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims.join(', ')},), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const h = Buffer.alloc(10);
  h.write('\x93NUMPY', 0, 'latin1');
  h[6] = 1;
  h[7] = 0;
  h.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([h, Buffer.from(header, 'latin1'),
    Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

async function logits(ort, model, photos, threads, profilePrefix) {
  const opts = {
    executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1,
    graphOptimizationLevel: 'all', executionMode: 'sequential',
  };
  if (profilePrefix) Object.assign(opts, { enableProfiling: true, profileFilePrefix: profilePrefix });
  const s = await ort.InferenceSession.create(model, opts);
  const [n, c, h, w] = photos.dims;
  const per = c * h * w;
  const out = [];
  let classes = 0;
  for (let i = 0; i < n; i++) {
    const x = new ort.Tensor('float32', photos.data.slice(i * per, (i + 1) * per), [1, c, h, w]);
    const y = (await s.run({ [s.inputNames[0]]: x }))[s.outputNames[0]];
    classes = y.dims[1];
    out.push(y.data);
  }
  if (profilePrefix) s.endProfiling();
  await s.release();
  const all = new Float32Array(n * classes);
  out.forEach((d, i) => all.set(d, i * classes));
  return { dims: [n, classes], data: all };
}

// {op type: number of nodes} of the first run in a profile.
function kernels(dir, prefix) {
  const f = fs.readdirSync(dir).filter((x) => x.startsWith(prefix) && x.endsWith('.json')).sort().pop();
  if (!f) throw new Error(`no profile ${prefix}*.json in ${dir}`);
  const seen = new Map();
  for (const e of JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'))) {
    if (e.cat === 'Node' && e.name.endsWith('_kernel_time') && e.args && e.args.op_name) {
      seen.set(e.name, e.args.op_name);
    }
  }
  const count = {};
  for (const op of seen.values()) count[op] = (count[op] || 0) + 1;
  return { count, profile: path.join(dir, f) };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const ortPath = o.modules ? path.resolve(o.modules, 'onnxruntime-node') : 'onnxruntime-node';
  const ort = require(ortPath);
  const photos = readNpy(o.photos);
  fs.mkdirSync(o.out, { recursive: true });
  const f = await logits(ort, o.fp32, photos, o.threads, null);
  writeNpy(path.join(o.out, 'ort-fp32-logits.npy'), f.dims, f.data);
  const prefix = 'ort-int8-profile';
  const q = await logits(ort, o.int8, photos, o.threads, path.join(o.out, prefix));
  writeNpy(path.join(o.out, 'ort-int8-logits.npy'), q.dims, q.data);
  const k = kernels(o.out, prefix);
  console.log(JSON.stringify({ images: photos.dims[0], kernels: k.count, profile: k.profile }));
}

main().catch((e) => {
  console.error(`ort_int8_check: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
