"""The GPU check's report as one table of text (the JSON is the report itself).

Kept apart from the stages so what a run measures and how it reads are changed apart.
"""

from __future__ import annotations

from typing import Any


def table(report: dict[str, Any]) -> str:
    lines = [f"GPU check ({report['mode']}) on {report['device']} ({report['gpu_name']})"]

    def fmt(value: Any) -> str:
        return "-" if value is None else str(value)

    for tts in report.get("tts", []):
        lines.append(
            f"TTS qwen3-tts {tts['model']}: load {tts['load_s']} s, weights {fmt(tts['weights_mib'])} MiB, "
            f"{tts['tokens']} tokens per item, largest batch (est.) {fmt(tts['largest_batch_estimate'])}"
        )
        lines.append("  batch  wall_s  audio_s  audio_s/wall_s  peak_MiB  left_after_MiB")
        for row in tts["batches"]:
            lines.append(
                f"  {row['batch']:>5}  {row['wall_s']:>6}  {row['audio_s']:>7}  {row['audio_s_per_wall_s']:>14}"
                f"  {fmt(row['peak_mib']):>8}  {fmt(row['left_after_mib']):>14}"
            )
        oom = tts["oom_split"]
        label = "SIMULATED out-of-memory" if oom["simulated"] else "real CUDA out-of-memory"
        lines.append(
            f"  OOM split ({label}): batch {oom['batch']} -> calls {' '.join(oom['calls'])}; "
            f"{oom['items_ok']} ok, {oom['items_failed']} failed; healthy after: {oom['healthy_after']}; "
            f"left {fmt(oom['left_after_mib'])} MiB"
        )
    wx = report.get("whisperx")
    if wx:
        lines.append(
            f"WhisperX {wx['model']}: load {wx['load_s']} s; {wx['speech_s']} s of eSpeak speech, "
            f"max {wx['max_new_tokens']} tokens per window"
        )
        lines.append("  batch_size  wall_s  x_realtime  peak_MiB")
        for row in wx["transcribe"]:
            lines.append(
                f"  {row['batch_size']:>10}  {row['wall_s']:>6}  {row['x_realtime']:>10}  {fmt(row['peak_mib']):>8}"
            )
        lines.append(
            f"  align {wx['align_audio_s']} s: {wx['align_s']} s (first, with load: {wx['align_first_s']} s), "
            f"peak {fmt(wx['align_peak_mib'])} MiB"
        )
    for name, row in report.get("http", {}).items():
        lines.append(
            f"HTTP {name} under gunicorn: ready in {row['ready_s']} s, {row['path']} -> {row['status']} "
            f"in {row['wall_s']} s" + (f", /align -> {row['align_status']}" if "align_status" in row else "")
        )
    for row in report.get("sizes", []):
        published = (
            "-" if row["published"] is None else f"{row['published'] / 1e6:,.1f}M ±{row['tolerance']:.0%}"
        )
        verdict = {True: "ok", False: "MISMATCH", None: ""}[row["ok"]]
        lines.append(
            f"size {row['model']:<32} {row['parameters'] / 1e6:>10,.1f}M  published {published} {verdict}"
        )
    return "\n".join(lines)
