"""The GAN training loop: one and two processes, exact resume, faults, the output layout, and pushes to the local Hub."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from hubtune.errors import ConfigError, HubAuthError, HubPushError
from hubtune.gan import (
    CheckpointError,
    DCGANDiscriminator,
    DCGANGenerator,
    DatasetTooSmallError,
    Generator,
    GANTrainingConfig,
    NonFiniteLossError,
    train_gan,
)
from hubtune.gan.checkpoint import load_module, read_trainer_state, write_trainer_state
from hubtune.manifest import write_manifest

TINY = dict(dataset="digits", image_size=16, g_channels=8, d_channels=8, latent_dim=16, per_device_train_batch_size=8,
            log_every=1, sample_every=2, checkpoint_every=2, num_sample_images=4, eval_num_samples=0,
            export_generator=False, progress_bar=False)


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/conftest.py


def tiny(tmp_path, name="run", **overrides):
    return GANTrainingConfig.from_options(**{**TINY, "output_dir": str(tmp_path / name), **overrides})


def read_logs(folder):
    return [json.loads(line) for line in (Path(folder) / "logs.jsonl").read_text().splitlines() if line]


def test_one_process_run_writes_samples_checkpoints_metrics_and_generator(tmp_path):
    config = tiny(tmp_path, max_steps=4, eval_num_samples=100, eval_batch_size=50, export_generator=True,
                  eval_feature_extractor="timm-random:resnet10t",
                  r1_gamma=1.0, progress_bar=True)
    result = train_gan(config)
    out = Path(result.output_dir)
    assert result.steps == 4 and [r["step"] for r in result.losses] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss_d"])) for r in result.losses)
    assert {"loss_d", "loss_g", "shrinkage_loss_real", "shrinkage_loss_fake", "r1"} <= set(result.losses[0])
    logged = read_logs(out)  # written by the Accelerate tracker
    assert [r["step"] for r in logged if "loss_d" in r] == [1, 2, 3, 4]
    assert logged[0]["loss_d"] == pytest.approx(result.losses[0]["loss_d"])
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-0000002.png", "step-0000004.png"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    state = read_trainer_state(out / "checkpoint-4")
    assert state["step"] == 4 and state["config"]["arch"] == "dcgan"

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["feature_extractor"] == "timm-random:resnet10t:0"
    assert metrics["num_real"] == 100 and metrics["num_fake"] == 100 and metrics["fid"] > 0

    # the Trainer's layout: the final generator at the output root, the run's config beside it
    gen_dir = Path(result.generator_dir)
    assert gen_dir == out
    assert {"config.json", "model.safetensors", "README.md", "samples.png", "training_config.json", "metrics.json",
            "logs.jsonl"} <= {p.name for p in gen_dir.iterdir()}
    assert json.loads((out / "config.json").read_text())["arch"] == "dcgan"
    assert json.loads((out / "training_config.json").read_text())["max_steps"] == 4
    card = (gen_dir / "README.md").read_text()
    assert "timm-random:resnet10t:0" in card and "FID" in card and "AdaptiveMix" in card
    assert "library_name: hubtune" in card and "unconditional-image-generation" in card
    # the exported generator is the EMA of the last step: identical images from the checkpoint's EMA weights
    loaded = Generator.from_pretrained(out)
    ema = DCGANGenerator(latent_dim=16, image_size=16, channels=1, base_channels=8)
    load_module(ema, out / "checkpoint-4" / "ema.safetensors")
    assert torch.equal(loaded.generate(8, seed=5), ema.generate(8, seed=5))


def test_resume_continues_exactly(tmp_path):
    common = dict(r1_gamma=1.0, r1_every=2, adaptivemix_per_sample=True, checkpoint_every=3)
    full = train_gan(tiny(tmp_path, "full", max_steps=6, **common))
    AcceleratorState._reset_state(True)
    first = train_gan(tiny(tmp_path, "split", max_steps=3, **common))
    assert first.last_checkpoint.endswith("checkpoint-3")
    AcceleratorState._reset_state(True)
    resumed = train_gan(tiny(tmp_path, "split", max_steps=6, resume_from_checkpoint=True, **common))
    assert [r["step"] for r in resumed.losses] == [4, 5, 6]
    assert resumed.losses == full.losses[3:], "the loss curve after resume matches the uninterrupted run"
    assert [r["step"] for r in read_logs(tmp_path / "split") if "loss_d" in r] == [1, 2, 3, 4, 5, 6]
    for name in ("generator", "discriminator", "ema"):
        a = (tmp_path / "full" / "checkpoint-6" / f"{name}.safetensors").read_bytes()
        b = (tmp_path / "split" / "checkpoint-6" / f"{name}.safetensors").read_bytes()
        assert a == b, f"{name} weights differ after resume"


def test_resume_from_missing_truncated_or_mismatching_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        train_gan(tiny(tmp_path, "empty", max_steps=2, resume_from_checkpoint=True))
    with pytest.raises(CheckpointError, match="does not exist"):
        train_gan(tiny(tmp_path, "x", max_steps=2, resume_from_checkpoint=str(tmp_path / "nowhere" / "checkpoint-2")))
    train_gan(tiny(tmp_path, "ok", max_steps=2))
    AcceleratorState._reset_state(True)
    with pytest.raises(CheckpointError, match="other settings.*arch"):
        train_gan(tiny(tmp_path, "ok", max_steps=4, resume_from_checkpoint=True, arch="resnet"))
    ckpt = tmp_path / "ok" / "checkpoint-2"
    weights = ckpt / "discriminator.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        train_gan(tiny(tmp_path, "ok", max_steps=4, resume_from_checkpoint=str(ckpt)))
    (ckpt / "trainer_state.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        train_gan(tiny(tmp_path, "ok", max_steps=4, resume_from_checkpoint=str(ckpt)))


class PoisonedDiscriminator(DCGANDiscriminator):
    """Turns its features into NaN after a number of forward calls (a diverging run)."""

    def __init__(self, healthy_calls, **kwargs):
        super().__init__(**kwargs)
        self.calls, self.healthy_calls = 0, healthy_calls

    def features(self, x):
        self.calls += 1
        f = super().features(x)
        return f * float("nan") if self.calls > self.healthy_calls else f


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    # 5 discriminator calls per step (2 per batch with AdaptiveMix, 1 on the generator step): NaN from step 3
    d = PoisonedDiscriminator(10, image_size=16, channels=1, base_channels=8)
    with pytest.raises(NonFiniteLossError, match=r"step 3: the discriminator loss is nan.*checkpoint-2"):
        train_gan(tiny(tmp_path, max_steps=6), discriminator=d)
    out = tmp_path / "run"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert read_trainer_state(out / "checkpoint-2")["step"] == 2  # intact, loadable
    assert not list(out.glob(".checkpoint-*"))


def test_dataset_smaller_than_the_batch_is_a_clear_error(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (i * 50, 0, 0)).save(folder / f"{i}.png")
    with pytest.raises(DatasetTooSmallError, match="3 images, fewer than one step's batch"):
        train_gan(tiny(tmp_path, dataset=str(folder), max_steps=2))


def _two_process_worker(output_dir):
    from accelerate import Accelerator
    from safetensors.torch import save_file

    from hubtune.gan import build_gan

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    # BatchNorm discriminator: AdaptiveMix makes its third pass, all through DDP's forward
    g, d = build_gan("dcgan", 16, 1, latent_dim=16, g_channels=8, d_channels=8, d_norm="batch")

    def params():  # parameters only: BatchNorm / spectral-norm buffers are per-process between broadcasts
        return {**{f"G.{k}": v.detach().clone() for k, v in g.named_parameters()},
                **{f"D.{k}": v.detach().clone() for k, v in d.named_parameters()}}

    initial = params()
    result = train_gan(GANTrainingConfig.from_options(**{**TINY, "output_dir": output_dir, "max_steps": 3, "r1_gamma": 1.0,
                                                         "checkpoint_every": 3}),
                       generator=g, discriminator=d, accelerator=accelerator)
    rank = accelerator.process_index
    save_file(params(), os.path.join(output_dir, f"rank{rank}.safetensors"))
    if rank == 0:
        save_file(initial, os.path.join(output_dir, "initial.safetensors"))
    with open(os.path.join(output_dir, f"losses_rank{rank}.json"), "w") as f:
        json.dump({"losses": result.losses, "num_processes": accelerator.num_processes}, f)


def test_two_processes(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "ddp"
    # accelerate.debug_launcher forks; it runs in a fresh interpreter because forking a process whose OpenMP
    # pool is already running (pytest ran other torch code) can hang the children
    code = ("import sys, test_gan_loop as t; from accelerate import debug_launcher; "
            "debug_launcher(t._two_process_worker, args=(sys.argv[1],), num_processes=2)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    done = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"losses_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["num_processes"] == 2
    assert [r["step"] for r in ranks[0]["losses"]] == [1, 2, 3]
    assert ranks[0]["losses"] == ranks[1]["losses"], "logged values are reduced over processes"
    assert {"rng_state_0.safetensors", "rng_state_1.safetensors"} <= {p.name for p in (out / "checkpoint-3").iterdir()}
    assert read_trainer_state(out / "checkpoint-3")["num_processes"] == 2
    # each process trained on different images: identical weights prove the gradients were synchronised
    a, b = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    initial = load_file(str(out / "initial.safetensors"))
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert all(not torch.equal(initial[k], a[k]) for k in a if k.endswith(("weight", "original"))), "all layers trained"


def test_push_to_hub_from_the_run_writes_the_card_and_loads_back(tmp_path, local_hub, hub_token, hub_repo_id):
    result = train_gan(tiny(tmp_path, max_steps=2, export_generator=True, push_to_hub=True, hub_model_id=hub_repo_id,
                            hub_token=hub_token))
    assert result.hub_url
    files = local_hub.files(hub_repo_id)
    assert {"config.json", "model.safetensors", "README.md", "samples.png"} <= set(files)
    assert not any(name.startswith("checkpoint-") or name == "training_config.json" for name in files)
    assert hub_repo_id.encode() in files["README.md"], "the card's loading snippet names the repository"
    assert hub_token.encode() not in b"".join(files.values())
    for path in Path(result.output_dir).rglob("*.json"):
        assert hub_token not in path.read_text(), f"the token was written to {path}"
    from_hub = Generator.from_pretrained(hub_repo_id, token=hub_token)
    local = Generator.from_pretrained(result.output_dir)
    assert torch.equal(from_hub.generate(4, seed=1), local.generate(4, seed=1))


@pytest.mark.parametrize("route,kind,error", [("commit", 500, HubPushError), ("preupload", 500, HubPushError),
                                              ("create_repo", 401, HubAuthError), ("commit", "drop", HubPushError)])
def test_failing_push_raises_hub_push_error_and_leaves_local_files_alone(tmp_path, local_hub, hub_token, hub_repo_id,
                                                                          route, kind, error):
    out = tmp_path / "gen"
    g = DCGANGenerator(latent_dim=8, image_size=16, channels=1, base_channels=8)
    g.save_pretrained(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    local_hub.inject_fault(route, kind, count=20)
    with pytest.raises(error) as info:
        Generator.from_pretrained(out).push_to_hub(hub_repo_id, token=hub_token)
    message = str(info.value)
    assert "\n" not in message and hub_repo_id in message and hub_token not in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "a failed push modifies no local file"


def test_a_generator_with_nan_weights_is_never_pushed_nor_saved(tmp_path, local_hub, hub_token, hub_repo_id,
                                                                monkeypatch):
    """Issue 17: Generator.push_to_hub and --push_to_hub check the weights before any request."""
    from hubtune.errors import ExportError
    from hubtune.gan import loop

    g = DCGANGenerator(latent_dim=8, image_size=16, channels=1, base_channels=8)
    with torch.no_grad():
        next(g.parameters()).view(-1)[0] = float("nan")
    seen = len(local_hub.requests)
    with pytest.raises(ExportError, match="Refusing to upload the generator to .*NaN or inf.*nothing was uploaded"):
        g.push_to_hub(hub_repo_id, token=hub_token)
    with pytest.raises(ExportError, match="NaN or inf"):
        g.save_pretrained(tmp_path / "gen")
    assert len(local_hub.requests) == seen and hub_repo_id not in local_hub.repos
    assert not (tmp_path / "gen" / "model.safetensors").exists()

    # a run whose EMA generator ends with NaN weights (training itself checks only the losses)
    original = loop._ema_update

    def nan_ema(ema, G, decay):
        original(ema, G, decay)
        with torch.no_grad():
            next(ema.parameters()).view(-1)[0] = float("nan")

    monkeypatch.setattr(loop, "_ema_update", nan_ema)
    with pytest.raises(ExportError, match="NaN or inf"):
        train_gan(tiny(tmp_path, max_steps=2, export_generator=True, push_to_hub=True, hub_model_id=hub_repo_id,
                       hub_token=hub_token))
    assert hub_repo_id not in local_hub.repos
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_push_with_a_rejected_token_is_an_auth_error(tmp_path, local_hub, hub_repo_id):
    g = DCGANGenerator(latent_dim=8, image_size=16, channels=1, base_channels=8)
    with pytest.raises(HubAuthError):
        g.push_to_hub(hub_repo_id, token="hf_not_a_valid_token")


def test_config_vocabulary_and_validation():
    with pytest.raises(ConfigError, match="bf16 and fp16"):
        GANTrainingConfig.from_options(bf16=True, fp16=True)
    with pytest.raises(ConfigError, match="max_steps must be a positive integer"):
        GANTrainingConfig.from_options(max_steps=0)
    with pytest.raises(ConfigError, match="hub_model_id"):
        GANTrainingConfig.from_options(push_to_hub=True)
    with pytest.raises(ConfigError, match="export_generator"):
        GANTrainingConfig.from_options(push_to_hub=True, hub_model_id="org/name", export_generator=False)
    with pytest.raises(ConfigError, match="adaptivemix_preset"):
        GANTrainingConfig.from_options(adaptivemix_preset="default")
    assert GANTrainingConfig.from_options(resume_from_checkpoint=True).resume_from_checkpoint == "latest"
    assert GANTrainingConfig.from_options(resume_from_checkpoint=False).resume_from_checkpoint is None
    assert "hub_token" not in GANTrainingConfig.from_options(hub_token="secret").to_dict()
    # an older hubtune's checkpoint config still reads
    old = {"data": "digits", "steps": 7, "batch_size": 4, "resume": False, "mixed_precision": "bf16",
           "betas": [0.0, 0.99], "ada_preset": "default", "export_generator": False}
    config = GANTrainingConfig.from_dict(old)
    assert (config.data.dataset, config.schedule.max_steps, config.optim.per_device_train_batch_size, config.optim.bf16,
            config.optim.fp16) == ("digits", 7, 4, True, False)
    assert config.optim.betas == (0.0, 0.99) and config.adaptive_mix.adaptivemix_preset == "paper"
    assert config.resume_from_checkpoint is None


def test_resume_from_a_checkpoint_written_with_the_old_config_names(tmp_path):
    train_gan(tiny(tmp_path, "old", max_steps=2))
    AcceleratorState._reset_state(True)
    ckpt = tmp_path / "old" / "checkpoint-2"
    state = read_trainer_state(ckpt)
    new = state["config"]
    state["config"] = {**{k: v for k, v in new.items() if k not in (
        "dataset", "max_steps", "per_device_train_batch_size", "bf16", "fp16", "adam_beta1", "adam_beta2",
        "resume_from_checkpoint")}, "data": new["dataset"], "steps": new["max_steps"],
        "batch_size": new["per_device_train_batch_size"], "mixed_precision": "no",
        "betas": [new["adam_beta1"], new["adam_beta2"]], "resume": False, "ada_preset": "default"}
    (ckpt / "trainer_state.json").unlink()
    write_trainer_state(ckpt, state)
    write_manifest(ckpt)  # as the run layer writes it, last
    resumed = train_gan(tiny(tmp_path, "old", max_steps=3, resume_from_checkpoint=True))
    assert [r["step"] for r in resumed.losses] == [3]


def test_real_only_mixing_scores_fakes_plainly_and_regularises_reals_only(tmp_path):
    from hubtune.gan.loop import discriminator_step, prepare_run
    from hubtune.gan.models import build_gan

    config = tiny(tmp_path, adaptivemix_mix_fakes=False, d_norm="none", max_steps=1)
    torch.manual_seed(0)
    G, D = build_gan("dcgan", 16, 1, latent_dim=16, g_channels=8, d_channels=8, d_norm="none")
    run = prepare_run(config, G, D)
    real = torch.rand(8, 1, 16, 16) * 2 - 1
    fake = run.G(torch.randn(8, 16)).detach()
    with torch.no_grad():
        expected_fake_logits = run.D(fake)
    out = discriminator_step(run, real, fake, 0)
    assert out.shrinkage_loss_fake is None and out.shrinkage_loss_real is not None
    torch.testing.assert_close(out.fake_logits, expected_fake_logits, rtol=0, atol=0)  # never mixed
    # loss = adversarial + weight x (the reals' shrinkage term only)
    weight = config.adaptive_mix.adaptivemix_shrinkage_weight
    torch.testing.assert_close(out.loss, out.adversarial + weight * out.shrinkage_loss_real)


def test_real_only_mixing_runs_logs_and_says_so_on_the_card(tmp_path):
    result = train_gan(tiny(tmp_path, adaptivemix_mix_fakes=False, max_steps=2, export_generator=True))
    assert "shrinkage_loss_real" in result.losses[0] and "shrinkage_loss_fake" not in result.losses[0]
    assert "| Mixed batches | real only |" in (Path(result.output_dir) / "README.md").read_text()
    plain = train_gan(tiny(tmp_path, name="both", max_steps=2, export_generator=True))
    assert "| Mixed batches | real and fake, each within itself |" in (Path(plain.output_dir) / "README.md").read_text()


def test_real_only_mixing_refuses_the_reference_preset(tmp_path):
    with pytest.raises(ConfigError, match="adaptivemix_mix_fakes=false needs adaptivemix_preset='paper'"):
        tiny(tmp_path, adaptivemix_mix_fakes=False, adaptivemix_preset="reference")


def test_ada_weight_defaults_to_the_measured_value_per_preset_and_keeps_a_given_one(tmp_path):
    def weight(config):
        return config.adaptive_mix.adaptivemix_shrinkage_weight

    assert weight(tiny(tmp_path)) == 0.1  # paper preset: chosen by benchmarks/bench_adaptivemix_fid.py
    assert weight(tiny(tmp_path, adaptivemix_preset="reference")) == 1.0  # the public script's
    assert weight(tiny(tmp_path, adaptivemix_shrinkage_weight=1.0)) == 1.0
    assert weight(tiny(tmp_path, adaptivemix_shrinkage_weight=0.0)) == 0.0
    # a run saved before the default changed resumes with the weight it trained with
    old = tiny(tmp_path, adaptivemix_shrinkage_weight=1.0).to_dict()
    assert weight(GANTrainingConfig.from_dict(old)) == 1.0


def test_the_ema_is_timms_with_tensorflows_warm_up():
    """GeneratorEma is timm's ModelEmaV3 (parameters averaged, buffers copied) with one difference: the decay warms
    up as TensorFlow's ExponentialMovingAverage(num_updates) does; timm's own warm-up would change every run."""
    from timm.utils import ModelEmaV3

    from hubtune.gan.loop import GeneratorEma

    model = DCGANGenerator(latent_dim=8, image_size=16, channels=1, base_channels=4)
    model.register_buffer("counter", torch.zeros(2))
    ema = GeneratorEma(model, decay=0.999)
    assert [ema.get_decay(s) for s in (0, 5, 100_000)] == [0.1, 6 / 15, 0.999]
    timm_warmup = ModelEmaV3(model, decay=0.999, use_warmup=True)
    assert [timm_warmup.get_decay(s) for s in (0, 5)] != [ema.get_decay(s) for s in (0, 5)], "why hubtune differs"

    before = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.counter.fill_(3.0)
    ema.update(model, step=5)
    weight = 1 - 6 / 15
    for old, new, averaged in zip(before, model.parameters(), ema.module.parameters()):
        assert torch.equal(averaged, torch.lerp(old, new.detach(), weight))
    assert torch.equal(ema.module.counter, model.counter), "buffers are copied, not averaged"
    assert not any(p.requires_grad for p in ema.module.parameters())
