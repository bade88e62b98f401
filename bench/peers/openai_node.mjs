// The official openai SDK on Node, as its README shows it (run by bench/run.lua).
//
//   node openai_node.mjs stream URL STREAMS CHUNKS DELAY_MS
//       STREAMS streams at once (Promise.all), each read with `for await`.
//   node openai_node.mjs chat URL REQUESTS
//       REQUESTS sequential chat.completions.create calls.
//
// Prints: content_bytes=B chunks=C requests=R   (R = requests that succeeded)
import OpenAI from 'openai';

const [mode, url, a, b, c] = process.argv.slice(2);
const client = new OpenAI({ baseURL: url, apiKey: 'sk-bench', maxRetries: 0 });
const request = { model: 'bench', messages: [{ role: 'user', content: 'hi' }] };

let bytes = 0, chunks = 0, ok = 0;

async function one(n, delay) {
  try {
    const stream = await client.chat.completions.create({ ...request, stream: true }, {
      headers: { 'x-test-chunks': n, 'x-test-chunk-delay-ms': delay, 'x-test-bench': '1' },
    });
    for await (const chunk of stream) {
      const text = chunk.choices[0]?.delta?.content;
      if (text) {
        bytes += Buffer.byteLength(text);
        chunks += 1;
      }
    }
    ok += 1;
  } catch (err) {
    console.error('openai_node:', err.message);
  }
}

if (mode === 'chat') {
  const n = Number(a);
  for (let i = 0; i < n; i++) {
    try {
      const res = await client.chat.completions.create(request);
      bytes += Buffer.byteLength(res.choices[0].message.content);
      ok += 1;
    } catch (err) {
      console.error('openai_node:', err.message);
    }
  }
} else if (mode === 'stream') {
  const streams = Number(a);
  const all = [];
  for (let i = 0; i < streams; i++) all.push(one(b, c));
  await Promise.all(all);
} else {
  console.error('usage: openai_node.mjs stream URL STREAMS CHUNKS DELAY_MS | chat URL REQUESTS');
  process.exit(2);
}

console.log(`content_bytes=${bytes} chunks=${chunks} requests=${ok}`);
