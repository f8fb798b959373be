// The call review page (templates/admin/calls/call/review.html): the recording's waveform
// drawn from its peaks, turn markers, seeking from a turn's time, the current turn
// highlighted while playing, and a live call's transcript refreshed until the call ends.
// Plain JavaScript, no library: the admin serves it as a static file.
(() => {
  "use strict";
  const root = document.querySelector(".review");
  if (!root) return;
  const transcript = document.getElementById("transcript");
  const player = root.querySelector(".player");
  const audio = root.querySelector("audio.review-audio");
  const canvas = root.querySelector("canvas.waveform");
  let peaks = null; // {duration_s, peaks_per_s, left: [0..1], right: [0..1]}

  const turnItems = () => [...transcript.querySelectorAll("li.turn[data-start]")];
  const duration = () =>
    (audio && Number.isFinite(audio.duration) && audio.duration) || (peaks && peaks.duration_s) || 0;

  function seek(seconds) {
    if (!audio) return;
    audio.currentTime = Math.max(0, seconds);
    const playing = audio.play();
    if (playing) playing.catch(() => {}); // autoplay refused: the position is still set
    highlight();
  }

  // The turn being heard: the last one that started at or before the playhead.
  function highlight() {
    if (!audio) return;
    const t = audio.currentTime;
    let current = null;
    for (const item of turnItems()) {
      if (parseFloat(item.dataset.start) <= t + 0.05) current = item;
    }
    for (const item of turnItems()) item.classList.toggle("playing", item === current);
    draw();
  }

  transcript.addEventListener("click", (event) => {
    const button = event.target.closest("[data-seek]");
    if (button) seek(parseFloat(button.dataset.seek));
  });

  function cssColor(name, fallback) {
    const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function draw() {
    if (!canvas) return;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const total = duration();
    const mid = height / 2;
    ctx.fillStyle = cssColor("--hairline-color", "#ccc");
    ctx.fillRect(0, mid, width, 1);
    if (peaks && total > 0) {
      // Caller (left channel) upwards from the middle, agent (right channel) downwards.
      const lanes = [
        [peaks.left || [], "#268bd2", -1],
        [peaks.right || [], "#859900", 1],
      ];
      for (const [values, color, direction] of lanes) {
        ctx.fillStyle = color;
        const perPixel = values.length / width;
        for (let x = 0; x < width; x++) {
          const from = Math.floor(x * perPixel);
          const to = Math.max(from + 1, Math.floor((x + 1) * perPixel));
          let peak = 0;
          for (let i = from; i < to && i < values.length; i++) peak = Math.max(peak, values[i]);
          const h = Math.max(0.5, peak * (mid - 2));
          ctx.fillRect(x, direction < 0 ? mid - h : mid + 1, 1, h);
        }
      }
    }
    if (total > 0) {
      // Turn markers: where each turn starts, in its speaker's colour.
      for (const item of turnItems()) {
        const x = (parseFloat(item.dataset.start) / total) * width;
        const agent = !item.classList.contains("turn-user");
        ctx.fillStyle = agent ? "rgba(133,153,0,.9)" : "rgba(38,139,210,.9)";
        ctx.fillRect(Math.round(x), agent ? mid : 0, 1, mid);
      }
      if (audio) {
        ctx.fillStyle = cssColor("--error-fg", "#ba2121");
        ctx.fillRect(Math.round((audio.currentTime / total) * width), 0, 2, height);
      }
    }
  }

  if (audio && canvas) {
    canvas.addEventListener("click", (event) => {
      const box = canvas.getBoundingClientRect();
      const total = duration();
      if (total > 0) seek(((event.clientX - box.left) / box.width) * total);
    });
    for (const name of ["timeupdate", "seeked", "loadedmetadata", "play", "pause"]) {
      audio.addEventListener(name, highlight);
    }
    // timeupdate fires about 4 times a second: move the playhead every frame while playing.
    const follow = () => {
      if (audio.paused) return;
      draw();
      window.requestAnimationFrame(follow);
    };
    audio.addEventListener("play", () => window.requestAnimationFrame(follow));
    window.addEventListener("resize", draw);
    fetch(player.dataset.peaksUrl, { credentials: "same-origin" })
      .then((response) => (response.ok ? response.json() : null))
      .then((data) => {
        peaks = data;
        draw();
      })
      .catch(() => {}); // no waveform, the player still plays
    draw();
  }

  // A live call: fetch the transcript fragment every 2 s; once the call has ended, load
  // the page once more for its final figures (analysis, audio health) and stop.
  // A setTimeout chain, not setInterval: the next fetch is scheduled only once this one is
  // done, so a slow answer never overlaps the next. A network error is a blip (try again);
  // a non-OK answer (403 once the session expired or the permission went, 404 once the call
  // was deleted) or one that is not JSON (a login page) will not get better: stop polling.
  if (root.dataset.live === "1" && root.dataset.liveUrl) {
    let last = transcript.innerHTML;
    const poll = async () => {
      let response;
      try {
        response = await fetch(root.dataset.liveUrl, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
      } catch (error) {
        window.reviewLiveTimer = window.setTimeout(poll, 2000);
        return;
      }
      const type = response.headers.get("Content-Type") || "";
      if (!response.ok || !type.includes("application/json")) {
        window.reviewLiveTimer = null;
        return;
      }
      let data;
      try {
        data = await response.json();
      } catch (error) {
        window.reviewLiveTimer = null; // a cut or malformed body: no better next time
        return;
      }
      if (data.html !== last) {
        transcript.innerHTML = data.html;
        last = data.html;
        draw();
      }
      if (!data.live) {
        window.reviewLiveTimer = null;
        window.location.reload();
        return;
      }
      window.reviewLiveTimer = window.setTimeout(poll, 2000);
    };
    window.reviewLiveTimer = window.setTimeout(poll, 2000);
  }
})();
