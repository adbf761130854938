#!/usr/bin/env node
// ONNX Runtime (CPU) throughput of an ONNX model with input "input"
// [N,3,S,S]. Prints one JSON object per line and batch size: batch,
// images_per_s, ms_per_batch (medians), ...
//
// usage: node ort_bench.js --model FILE [--batch 1,8] [--threads 2]
//        [--runs 20] [--warmup 3] [--size 384] [--modules DIR]
'use strict';

const path = require('node:path');

function parseArgs(argv) {
  const o = { batch: '1,8', threads: 2, runs: 20, warmup: 3, size: 384,
              model: null, modules: null };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    switch (k) {
      case '--model': o.model = v; i++; break;
      case '--batch': o.batch = v; i++; break;
      case '--threads': o.threads = parseInt(v, 10); i++; break;
      case '--runs': o.runs = parseInt(v, 10); i++; break;
      case '--warmup': o.warmup = parseInt(v, 10); i++; break;
      case '--size': o.size = parseInt(v, 10); i++; break;
      case '--modules': o.modules = v; i++; break;
      default:
        console.error(`ort_bench: unknown argument ${k}`);
        process.exit(2);
    }
  }
  if (!o.model) {
    console.error('ort_bench: --model FILE is required');
    process.exit(2);
  }
  return o;
}

function median(a) {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// Deterministic smooth random images, ImageNet-normalized: a 12x12 random
// grid per channel, bilinearly upsampled (the model's BN statistics were
// calibrated on such images; speed does not depend on the values).
function smoothImages(n, size) {
  const g = 12;
  const mean = [0.485, 0.456, 0.406];
  const std = [0.229, 0.224, 0.225];
  const a = new Float32Array(n * 3 * size * size);
  const grid = new Float32Array(g * g);
  let s = 12345;
  for (let img = 0; img < n; img++) {
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < g * g; i++) {
        s = (Math.imul(s, 1103515245) + 12345) >>> 0;
        grid[i] = (s >>> 8) / 16777216;
      }
      const base = (img * 3 + c) * size * size;
      for (let y = 0; y < size; y++) {
        const fy = Math.min(Math.max((y + 0.5) * g / size - 0.5, 0), g - 1);
        const y0 = Math.floor(fy), y1 = Math.min(y0 + 1, g - 1), wy = fy - y0;
        for (let x = 0; x < size; x++) {
          const fx = Math.min(Math.max((x + 0.5) * g / size - 0.5, 0), g - 1);
          const x0 = Math.floor(fx), x1 = Math.min(x0 + 1, g - 1), wx = fx - x0;
          const v = (1 - wy) * ((1 - wx) * grid[y0 * g + x0] + wx * grid[y0 * g + x1]) +
                    wy * ((1 - wx) * grid[y1 * g + x0] + wx * grid[y1 * g + x1]);
          a[base + y * size + x] = (v - mean[c]) / std[c];
        }
      }
    }
  }
  return a;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const ortPath = o.modules ? path.resolve(o.modules, 'onnxruntime-node') : 'onnxruntime-node';
  const ort = require(ortPath);
  const version = require(path.join(path.dirname(require.resolve(ortPath)), '..', 'package.json')).version;

  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(o.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: o.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const inName = session.inputNames[0];
  const outName = session.outputNames[0];

  for (const b of o.batch.split(',').map((s) => parseInt(s, 10))) {
    const dims = [b, 3, o.size, o.size];
    const x = new ort.Tensor('float32', smoothImages(b, o.size), dims);
    const times = [];
    let y;
    for (let i = 0; i < o.warmup + o.runs; i++) {
      const t = process.hrtime.bigint();
      y = await session.run({ [inName]: x });
      const dt = Number(process.hrtime.bigint() - t) / 1e6;
      if (i >= o.warmup) times.push(dt);
    }
    if (y[outName].dims[0] !== b) throw new Error(`unexpected output dims ${y[outName].dims}`);
    const med = median(times);
    const rssMb = process.resourceUsage().maxRSS / 1024;
    console.log(JSON.stringify({
      runtime: 'onnxruntime', version,
      batch: b, threads: o.threads, runs: o.runs,
      images_per_s: +(b * 1e3 / med).toFixed(3),
      ms_per_batch: +med.toFixed(3),
      min_ms: +Math.min(...times).toFixed(3), max_ms: +Math.max(...times).toFixed(3),
      load_ms: +loadMs.toFixed(1), peak_rss_mb: +rssMb.toFixed(1),
    }));
  }
  await session.release();
}

main().catch((e) => {
  console.error(`ort_bench: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
