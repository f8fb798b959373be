// AudioWorklet processors of the call simulator (one module, loaded once per AudioContext).
//
// pcm16-capture:  microphone -> 16 kHz mono PCM16 frames of 20 ms, posted to the main thread.
// pcm16-playback: agent PCM16 at the server's rate -> the context rate, through a small
//                 jitter buffer that a "clear" message empties at once (barge-in).
//
// The AudioContext runs at the device's default rate (Firefox refuses to connect a microphone
// to a context at another rate), so both directions resample here. `sampleRate` is the
// AudioWorkletGlobalScope's context rate.

const BUTTERWORTH_Q = [0.5412, 1.3066]; // two biquads = 4th-order Butterworth

function lowpass(cutoff, rate, q) {
  const w0 = (2 * Math.PI * cutoff) / rate;
  const cos = Math.cos(w0);
  const alpha = Math.sin(w0) / (2 * q);
  const a0 = 1 + alpha;
  return {
    b0: (1 - cos) / 2 / a0, b1: (1 - cos) / a0, b2: (1 - cos) / 2 / a0,
    a1: (-2 * cos) / a0, a2: (1 - alpha) / a0,
    x1: 0, x2: 0, y1: 0, y2: 0,
  };
}

function butterworth(cutoff, rate) {
  return BUTTERWORTH_Q.map((q) => lowpass(cutoff, rate, q));
}

function filterSample(filters, x) {
  for (const f of filters) {
    const y = f.b0 * x + f.b1 * f.x1 + f.b2 * f.x2 - f.a1 * f.y1 - f.a2 * f.y2;
    f.x2 = f.x1; f.x1 = x; f.y2 = f.y1; f.y1 = y;
    x = y;
  }
  return x;
}

// Streaming linear-interpolation resampler. `step` = input samples per output sample.
// Output positions are kept relative to the current input block; index -1 is the last
// sample of the previous block, so blocks join without clicks.
class Resampler {
  constructor(step) {
    this.step = step;
    this.pos = 0;
    this.prev = 0;
  }

  // Calls emit(value) for every output sample that falls inside `input` (n samples).
  run(input, n, emit) {
    while (this.pos <= n - 1) {
      const i0 = Math.floor(this.pos);
      const frac = this.pos - i0;
      const a = i0 < 0 ? this.prev : input[i0];
      const b = i0 + 1 < n ? input[i0 + 1] : a;
      emit(a + (b - a) * frac);
      this.pos += this.step;
    }
    this.pos -= n;
    if (n > 0) this.prev = input[n - 1];
  }
}

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    const targetRate = opts.targetRate || 16000;
    this.frameSize = Math.round((targetRate * (opts.frameMs || 20)) / 1000);
    const step = sampleRate / targetRate;
    // Anti-aliasing only when downsampling (the usual 44.1/48 kHz device rate).
    this.filters = step > 1 ? butterworth(0.45 * targetRate, sampleRate) : [];
    this.resampler = new Resampler(step);
    this.block = new Float32Array(128);
    this.frame = new Int16Array(this.frameSize);
    this.fill = 0;
    this.sumSquares = 0;
    this.emit = (v) => this.push(v);
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true; // no source connected (yet)
    const n = input[0].length;
    if (this.block.length < n) this.block = new Float32Array(n);
    const x = this.block;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let c = 0; c < input.length; c++) s += input[c][i];
      x[i] = filterSample(this.filters, s / input.length);
    }
    this.resampler.run(x, n, this.emit);
    return true;
  }

  push(value) {
    const s = Math.max(-1, Math.min(1, value));
    this.sumSquares += s * s;
    this.frame[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    if (this.fill === this.frameSize) {
      const level = Math.sqrt(this.sumSquares / this.frameSize);
      const pcm = this.frame.buffer;
      this.port.postMessage({ pcm, level }, [pcm]);
      this.frame = new Int16Array(this.frameSize);
      this.fill = 0;
      this.sumSquares = 0;
    }
  }
}

// Messages in:  {type: "rate", rate}            source sample rate (from the server's "started")
//               {type: "audio", pcm: ArrayBuffer} PCM16 mono at the source rate
//               {type: "clear"}                  drop everything queued (barge-in)
// Messages out: {type: "stats", played, buffered} every ~100 ms while there is activity
//               {type: "cleared", dropped}       samples (context rate) that were never played
class Pcm16Playback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    // Start a talk spurt only once this much is queued, so network jitter does not stutter it.
    this.prebuffer = Math.round((sampleRate * (opts.prebufferMs || 60)) / 1000);
    this.chunks = [];
    this.offset = 0; // read position inside chunks[0]
    this.buffered = 0; // samples queued, context rate
    this.playing = false;
    this.waited = 0; // samples of silence output while a partial prebuffer waits
    this.played = 0; // samples played since the node was created, context rate
    this.sinceReport = 0;
    this.setRate(opts.sourceRate || 16000);
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  setRate(rate) {
    const step = rate / sampleRate;
    this.resampler = new Resampler(step);
    // Linear interpolation images the source spectrum above its Nyquist: filter it out.
    this.filters = step < 1 ? butterworth(0.45 * rate, sampleRate) : [];
  }

  onMessage(msg) {
    if (msg.type === "audio") this.write(new Int16Array(msg.pcm));
    else if (msg.type === "clear") this.clear();
    else if (msg.type === "rate") this.setRate(msg.rate);
  }

  write(pcm) {
    const n = pcm.length;
    if (n === 0) return;
    const input = new Float32Array(n);
    for (let i = 0; i < n; i++) input[i] = pcm[i] / 0x8000;
    const out = new Float32Array(Math.ceil((n + 1) / this.resampler.step) + 1);
    let count = 0;
    this.resampler.run(input, n, (v) => { out[count++] = filterSample(this.filters, v); });
    if (count === 0) return;
    this.chunks.push(out.subarray(0, count));
    this.buffered += count;
  }

  clear() {
    const dropped = this.buffered;
    this.chunks = [];
    this.offset = 0;
    this.buffered = 0;
    this.playing = false;
    this.waited = 0;
    for (const f of this.filters) { f.x1 = f.x2 = f.y1 = f.y2 = 0; }
    this.resampler.pos = 0;
    this.resampler.prev = 0;
    this.port.postMessage({ type: "cleared", dropped, played: this.played });
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    if (!this.playing && this.buffered > 0) {
      // Play once the prebuffer is full, or when the tail of a short utterance has waited
      // as long as the prebuffer would have taken to fill.
      this.waited += n;
      if (this.buffered >= this.prebuffer || this.waited >= this.prebuffer) {
        this.playing = true;
        this.waited = 0;
      }
    }
    let written = 0;
    if (this.playing) {
      while (written < n && this.chunks.length > 0) {
        const chunk = this.chunks[0];
        const take = Math.min(n - written, chunk.length - this.offset);
        out.set(chunk.subarray(this.offset, this.offset + take), written);
        written += take;
        this.offset += take;
        if (this.offset === chunk.length) {
          this.chunks.shift();
          this.offset = 0;
        }
      }
      this.buffered -= written;
      this.played += written;
      if (this.buffered === 0) this.playing = false; // underrun: prebuffer again
    }
    out.fill(0, written);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (written > 0 || this.sinceReport > 0) {
      this.sinceReport += n;
      if (this.sinceReport >= sampleRate / 10 || (written === 0 && this.buffered === 0)) {
        this.port.postMessage({ type: "stats", played: this.played, buffered: this.buffered });
        this.sinceReport = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
registerProcessor("pcm16-playback", Pcm16Playback);
