"""QwenEngine on tiny offline Qwen3-TTS checkpoints: the real qwen_tts code runs on the CPU.

Spies wrap the real qwen_tts methods (they still run) to check what reached them.
"""

import numpy as np
import pytest

from tts.engines.base import EngineError, SynthesisItem, UnsupportedRequest, VoiceReference

pytestmark = pytest.mark.gpu

RATE = 24000
FRAME = 1920  # samples per codec frame (12.5 Hz at 24 kHz)
MAX_NEW_TOKENS = 24


def reference(seconds=1.0, rate=16000, text="This is my voice."):
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.02 * np.random.default_rng(0).standard_normal(t.size)
    return VoiceReference(audio.astype(np.float32), rate, text)


def item(text, language="English", speaker="Aiden", instruct=None, ref=None, seed=None):
    return SynthesisItem(text, language, speaker, instruct, ref, seed)


def assert_audios(audios, rate, count):
    assert rate == RATE
    assert len(audios) == count
    for audio in audios:
        assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1
        assert 0 < audio.size <= MAX_NEW_TOKENS * FRAME
        assert np.isfinite(audio).all()


# --- without loading -------------------------------------------------------------------


def test_describe_before_load_reports_what_is_known(qwen_settings):
    from tts.engines.qwen import QwenEngine

    info = QwenEngine(qwen_settings("Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice")).describe()
    assert info["engine"] == "qwen3-tts"
    assert info["model"] == "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice"
    assert info["model_type"] == "custom_voice"  # guessed from the name until loaded
    assert info["device"] == "cpu" and info["gpu_name"] is None
    assert (info["speaker"], info["language"]) == ("Aiden", "English")
    assert info["supports_instruct"] is True and info["voice_clone"] is False
    for name, kind in (
        ("Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign", "voice_design"),
        ("Qwen/Qwen3-TTS-12Hz-0.6B-Base", "base"),
        ("/models/mine", None),
    ):
        assert QwenEngine(qwen_settings(name)).describe()["model_type"] == kind


def test_synthesize_before_load_is_an_engine_error(qwen_settings, qwen_checkpoints):
    from tts.engines.qwen import QwenEngine

    with pytest.raises(EngineError, match="not loaded"):
        QwenEngine(qwen_settings(qwen_checkpoints["custom_voice"])).synthesize([item("Hi.")])


def test_cuda_requested_without_cuda_says_how_to_run_on_the_cpu(qwen_settings, qwen_checkpoints):
    import torch

    from tts.engines.qwen import QwenEngine

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    engine = QwenEngine(qwen_settings(qwen_checkpoints["custom_voice"], device="cuda"))
    with pytest.raises(EngineError, match="TTS_DEVICE=cpu"):
        engine.load()
    assert engine.model is None


@pytest.mark.parametrize(
    "field, value, variable",
    [
        ("dtype", "float64", "TTS_DTYPE"),
        ("attn_implementation", "magic", "TTS_ATTN_IMPLEMENTATION"),
    ],
)
def test_bad_dtype_or_attention_is_refused(qwen_settings, qwen_checkpoints, field, value, variable):
    from tts.engines.qwen import QwenEngine

    engine = QwenEngine(qwen_settings(qwen_checkpoints["custom_voice"], **{field: value}))
    with pytest.raises(EngineError, match=variable):
        engine.load()


# --- CustomVoice -----------------------------------------------------------------------


def test_custom_voice_describe(custom_voice_engine):
    info = custom_voice_engine.describe()
    assert info["model_type"] == "custom_voice"
    assert info["speakers"] == ["aiden", "ryan"]
    assert info["languages"] == ["auto", "chinese", "english", "german"]  # dialects left out
    assert info["supports_instruct"] is True and info["voice_clone"] is False
    assert info["gpu_name"] is None


def test_custom_voice_one_batched_call_with_per_item_fields(custom_voice_engine, spy):
    calls = spy(custom_voice_engine, "generate_custom_voice")
    items = [
        item("Hello there.", "English", "Aiden"),
        item("Second line.", "en", "ryan", "whisper it"),
        item("Third.", "auto", "", ""),
    ]
    audios, rate = custom_voice_engine.synthesize(items)
    assert_audios(audios, rate, 3)
    assert len(calls.calls) == 1
    args, kwargs = calls.last
    assert args[0] == ["Hello there.", "Second line.", "Third."]
    assert kwargs["speaker"] == ["Aiden", "ryan", "Aiden"]  # empty speaker: the server's
    assert kwargs["language"] == ["English", "english", "Auto"]
    assert kwargs["instruct"] == [None, "whisper it", None]
    assert kwargs["max_new_tokens"] == MAX_NEW_TOKENS


def test_unknown_speaker_is_unsupported_with_qwens_message(custom_voice_engine):
    with pytest.raises(UnsupportedRequest, match="Unsupported speakers.*Bob"):
        custom_voice_engine.synthesize([item("Hi.", speaker="Bob")])


def test_unsupported_language_is_unsupported(custom_voice_engine):
    with pytest.raises(UnsupportedRequest, match="Unsupported languages.*klingon"):
        custom_voice_engine.synthesize([item("Hi.", language="klingon")])


def test_reference_audio_needs_a_base_model(custom_voice_engine, spy):
    calls = spy(custom_voice_engine, "generate_custom_voice")
    with pytest.raises(UnsupportedRequest, match="Base"):
        custom_voice_engine.synthesize([item("Hi.", ref=reference())])
    assert calls.calls == []


def test_out_of_memory_propagates_unchanged(custom_voice_engine, monkeypatch):
    import torch

    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def explode(*args, **kwargs):
        raise oom

    monkeypatch.setattr(custom_voice_engine.model, "generate_custom_voice", explode)
    with pytest.raises(torch.cuda.OutOfMemoryError) as caught:
        custom_voice_engine.synthesize([item("Hi.")])
    assert caught.value is oom


def test_cached_gpu_memory_is_given_back_after_every_batch_even_a_failed_one(
    custom_voice_engine, monkeypatch
):
    """On CUDA, each batch ends with torch.cuda.empty_cache() on the engine's device, so the
    other server on the GPU can have the memory (the CPU run stands in for the device)."""
    import contextlib

    import torch

    from tts.engines.qwen import QwenEngine

    freed, devices = [], []
    monkeypatch.setattr(QwenEngine, "_on_cuda", property(lambda self: True))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(1))
    monkeypatch.setattr(torch.cuda, "device", lambda d: devices.append(d) or contextlib.nullcontext())
    custom_voice_engine.synthesize([item("One."), item("Two.")])
    assert freed == [1] and devices == [custom_voice_engine._device_map]

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(custom_voice_engine.model, "generate_custom_voice", oom)
    with pytest.raises(torch.OutOfMemoryError):
        custom_voice_engine.synthesize([item("Three.")])
    assert freed == [1, 1]


def test_free_memory_does_nothing_on_the_cpu(custom_voice_engine, monkeypatch):
    """The lane calls free_memory after an out-of-memory error (through the engine
    process, gpu_audio/server/engine_process.py WORK_CALLS); on the CPU it must not touch
    CUDA at all (torch.cuda.empty_cache would initialise it)."""
    import torch

    touched = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: touched.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "device", lambda d: touched.append(d))
    custom_voice_engine.free_memory()
    custom_voice_engine.synthesize([item("One.")])
    assert touched == []


def test_free_memory_gives_torch_cached_blocks_back_on_cuda(qwen_checkpoints, qwen_settings):
    """Unpatched: what torch caches after a tensor is freed is given back to the GPU
    (another server on it may need the memory). The engine need not be loaded."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from tts.engines.qwen import QwenEngine

    engine = QwenEngine(qwen_settings(qwen_checkpoints["custom_voice"], device="cuda:0"))
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda:0")
    del block
    cached = torch.cuda.memory_reserved(0)
    assert cached >= 64 * 2**20  # freed by Python, still held by torch's cache
    engine.free_memory()
    assert torch.cuda.memory_reserved(0) <= cached - 64 * 2**20


def test_empty_batch_is_no_call(custom_voice_engine, spy):
    calls = spy(custom_voice_engine, "generate_custom_voice")
    assert custom_voice_engine.synthesize([]) == ([], RATE)
    assert calls.calls == []


def test_same_seed_same_audio_other_seed_other_audio(custom_voice_engine, monkeypatch):
    """Sampling (do_sample, top-k, temperature) is what a seed fixes: same texts, same
    batch, same seed, same codec tokens and samples, whatever ran in between. The tiny
    model's decoder makes near-silence, so the sampled codec tokens are compared too."""
    inner = custom_voice_engine.model.model
    real = inner.generate
    codes = []

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        codes.append([c.tolist() for c in out[0]])
        return out

    monkeypatch.setattr(inner, "generate", recording)

    def speak(seed):
        audios, _ = custom_voice_engine.synthesize(
            [item("Hello there.", seed=seed), item("Second line.", "en", "ryan", seed=seed)]
        )
        return [a.tobytes() for a in audios], codes[-1]

    unseeded = [speak(None)[1] for _ in range(2)]
    assert unseeded[0] != unseeded[1]  # without a seed each call samples anew
    first = speak(7)
    custom_voice_engine.synthesize([item("Something unseeded in between.")])
    assert speak(7) == first
    assert len({repr(speak(seed)[1]) for seed in (1, 2, 3, 7)}) > 1


def test_items_of_different_seeds_get_a_call_each_in_order(custom_voice_engine, spy):
    calls = spy(custom_voice_engine, "generate_custom_voice")
    mixed = [item("One.", seed=1), item("Two.", seed=2), item("Three.", seed=1)]
    audios, rate = custom_voice_engine.synthesize(mixed)
    assert_audios(audios, rate, 3)
    assert [c[0][0] for c in calls.calls] == [["One.", "Three."], ["Two."]]
    alone = custom_voice_engine.synthesize([item("Two.", seed=2)])[0]
    assert np.array_equal(audios[1], alone[0])


def test_load_twice_keeps_the_model(custom_voice_engine):
    model = custom_voice_engine.model
    custom_voice_engine.load()
    assert custom_voice_engine.model is model


# --- VoiceDesign -----------------------------------------------------------------------


def test_voice_design_describe(voice_design_engine):
    info = voice_design_engine.describe()
    assert info["model_type"] == "voice_design"
    assert "speakers" not in info
    assert info["supports_instruct"] is True and info["voice_clone"] is False


def test_voice_design_instructs_and_default_description(voice_design_engine, spy):
    from tts.engines.qwen import DEFAULT_VOICE_DESCRIPTION

    calls = spy(voice_design_engine, "generate_voice_design")
    items = [
        item("Hello there.", instruct="A deep, calm male voice."),
        item("Second line.", "de", instruct=None),
    ]
    audios, rate = voice_design_engine.synthesize(items)
    assert_audios(audios, rate, 2)
    args, kwargs = calls.last
    assert len(calls.calls) == 1
    assert args[0] == ["Hello there.", "Second line."]
    assert kwargs["instruct"] == ["A deep, calm male voice.", DEFAULT_VOICE_DESCRIPTION]
    assert kwargs["language"] == ["English", "german"]
    assert "speaker" not in kwargs


# --- Base (voice clone) ----------------------------------------------------------------


def test_base_describe(base_engine):
    info = base_engine.describe()
    assert info["model_type"] == "base" and info["voice_clone"] is True
    assert info["supports_instruct"] is False


def test_base_shared_reference_is_passed_once(base_engine, spy):
    calls = spy(base_engine, "generate_voice_clone")
    ref = reference()
    audios, rate = base_engine.synthesize(
        [item("Hello there.", ref=ref), item("Second line.", "auto", ref=ref)]
    )
    assert_audios(audios, rate, 2)
    assert len(calls.calls) == 1
    args, kwargs = calls.last
    assert args[0] == ["Hello there.", "Second line."]
    assert kwargs["language"] == ["English", "Auto"]
    audio, sr = kwargs["ref_audio"]
    assert sr == 16000 and np.array_equal(audio, ref.audio)
    assert kwargs["ref_text"] == "This is my voice."
    assert kwargs["x_vector_only_mode"] is False


def test_base_per_item_references_with_and_without_transcript(base_engine, spy):
    calls = spy(base_engine, "generate_voice_clone")
    with_text, without = reference(), reference(0.5, 24000, text=None)
    audios, rate = base_engine.synthesize([item("One.", ref=with_text), item("Two.", ref=without)])
    assert_audios(audios, rate, 2)
    _, kwargs = calls.last
    assert [sr for _, sr in kwargs["ref_audio"]] == [16000, 24000]
    assert kwargs["ref_text"] == ["This is my voice.", None]
    assert kwargs["x_vector_only_mode"] == [False, True]  # no transcript: speaker embedding only


def test_base_without_reference_is_unsupported(base_engine, spy):
    calls = spy(base_engine, "generate_voice_clone")
    with pytest.raises(UnsupportedRequest, match="send ref_audio"):
        base_engine.synthesize([item("Hi.", ref=reference()), item("No voice.")])
    assert calls.calls == []


# --- loading -----------------------------------------------------------------------------


def test_hub_id_resolves_through_models_dir(qwen_checkpoints, qwen_settings, tmp_path):
    """With MODELS_DIR set, a hub id loads from the HF cache layout inside it (offline)."""
    import shutil

    from tts.engines.qwen import QwenEngine

    repo = tmp_path / "models--tiny--Qwen3-TTS-tiny-VoiceDesign"
    shutil.copytree(qwen_checkpoints["voice_design"], repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    engine = QwenEngine(qwen_settings("tiny/Qwen3-TTS-tiny-VoiceDesign", models_dir=str(tmp_path)))
    engine.load()
    assert engine.describe()["model_type"] == "voice_design"


def test_cuda_load_and_speak(qwen_checkpoints, qwen_settings):
    """Only where a GPU is present: the same model on CUDA in bfloat16."""
    import torch

    from tts.engines.qwen import QwenEngine

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    engine = QwenEngine(qwen_settings(qwen_checkpoints["custom_voice"], device="cuda", dtype="bfloat16"))
    engine.load()
    assert engine.describe()["gpu_name"] == torch.cuda.get_device_name(0)
    audios, rate = engine.synthesize([item("Hello there."), item("Second.", instruct="fast")])
    assert_audios(audios, rate, 2)
