"""Our SAE training step against SAELens's same architecture, same activations, same d_in/width/k/batch/steps.

``--kind topk`` (default), ``batchtopk`` or ``jumprelu``: each against SAELens's ``TopKTrainingSAE``,
``BatchTopKTrainingSAE`` or ``JumpReLUTrainingSAE``. Our BatchTopK and JumpReLU steps are dense autograd
(no sparse fast path yet), so their ratio measures the rest of the step. For JumpReLU both sides get the same
objective: SAELens's loss is the per-token squared error summed over dimensions, ours the NMSE (that error
over the batch's variance), so SAELens's ``l0_coefficient`` is ours times the held-out data's mean squared
distance to its mean; the same ``jumprelu_bandwidth`` and initial threshold on both sides. BatchTopK's
held-out NMSE is taken as SAELens computes it in its training class: the ``k * B`` largest of each 4096-token
chunk (not our inference threshold, which needs a few hundred steps to settle).

Both start from the same weights (our tied init, b_pre = geometric median) and see the same batches of
SmolLM2 layer-15 residual activations (normalised to mean norm sqrt(d_in)); Adam with the same constant
learning rate. Ours: the library's ``sae.train_step`` (fast sparse gradients, one dense GEMM). SAELens: its
``TopKTrainingSAE.training_forward_pass`` + backward + grad clipping + Adam, as its ``SAETrainer`` does.
SAELens pins transformer-lens<4, so its half runs in ``.saelens-venv`` (made by ``bench/saelens_venv.sh``,
the venv `make test` uses too; ``SAELENS_VENV`` names another) as a subprocess of this script. Prints the median step times, their ratio, both final NMSEs on held-out
activations, and the fraction of the GEMM floor each reaches, with this machine's GEMM throughput
measured in the same run (an encoder-shaped [batch, d_in] x [d_in, width] fp32 product).

Equal NMSE (TopK): SAELens runs first; our SAE then trains past the same steps on further batches (same
order, same constant lr) until its held-out NMSE reaches SAELens's final one, and the script prints the
ratio of the two sides' summed step times to that NMSE (warm-up steps included on both sides).

    .venv/bin/python bench/bench_sae.py [--steps 20] [--width 4608] [--k 32] [--batch 4096]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
SAELENS_VENV = ROOT / os.environ.get("SAELENS_VENV", ".saelens-venv")
BENCH_PY = SAELENS_VENV / "bin" / "python"


def gemm_flops(batch: int, d: int, n: int, repeats: int = 5) -> float:
    """Measured FLOP/s of the encoder-shaped fp32 GEMM (median of ``repeats``)."""
    a, w = torch.randn(batch, d), torch.randn(n, d)
    a @ w.t()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ w.t()
        ts.append(time.perf_counter() - t0)
    return 2 * batch * d * n / statistics.median(ts)


# --------------------------------------------------------------------------- SAELens half (bench venv)


def saelens_half(folder: Path) -> None:
    import sae_lens
    from sae_lens.saes.sae import TrainStepInput

    spec = json.loads((folder / "spec.json").read_text())
    data = load_file(str(folder / "data.safetensors"))
    init = load_file(str(folder / "init.safetensors"))
    x, val, order = data["x"], data["val"], data["order"]
    common = {"d_in": spec["d_in"], "d_sae": spec["width"], "dtype": "float32", "device": "cpu",
              "apply_b_dec_to_input": True, "normalize_activations": "none"}
    coefficients = {}
    if spec["kind"] == "jumprelu":
        cfg = sae_lens.JumpReLUTrainingSAEConfig(**common, jumprelu_bandwidth=spec["bandwidth"],
                                                 jumprelu_init_threshold=spec["init_threshold"],
                                                 l0_coefficient=spec["l0_coef_saelens"])
        model = sae_lens.JumpReLUTrainingSAE(cfg)
        coefficients = {"l0": spec["l0_coef_saelens"]}
    elif spec["kind"] == "batchtopk":
        model = sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(**common, k=spec["k"]))
    else:
        model = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(**common, k=spec["k"]))
    with torch.no_grad():
        model.W_enc.copy_(init["W_enc"].t())
        model.W_dec.copy_(init["W_dec"])
        model.b_enc.copy_(init["b_enc"])
        model.b_dec.copy_(init["b_pre"])
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"], betas=(0.9, 0.999))
    dead = torch.zeros(spec["width"], dtype=torch.bool)
    times = []
    for step in range(spec["steps"]):
        batch = x[order[step]]
        t0 = time.perf_counter()
        model.train()
        out = model.training_forward_pass(step_input=TrainStepInput(
            sae_in=batch, coefficients=coefficients, dead_neuron_mask=dead, n_training_steps=step, is_logging_step=False))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        model.eval()
        recon = torch.cat([model(val[i:i + 4096]) for i in range(0, val.shape[0], 4096)])
        l0 = float((model.encode(val) != 0).sum(1).float().mean())
    save_file({"recon": recon.contiguous()}, str(folder / "recon_saelens.safetensors"))  # NMSE: by the parent
    print("RESULT " + json.dumps({"times": times, "threads": torch.get_num_threads(), "l0": l0}))


# --------------------------------------------------------------------------- our half + driver


def batch_topk_forward(model, x: torch.Tensor) -> torch.Tensor:
    """Our BatchTopK SAE with its training-time selection (the ``k * B`` largest of the chunk ``x [B, d]``)."""
    r = torch.relu(model.pre_acts(x * model.scale))
    vals, idx = r.flatten().topk(model.cfg.k * x.shape[0])
    z = torch.zeros_like(r).flatten().scatter(0, idx, vals).view_as(r)
    return model.decode(z)


def ours_half(folder: Path, spec: dict, target_nmse: float | None = None) -> dict:
    """Our ``spec["steps"]`` steps (timed), then, given ``target_nmse``, more steps on further batches until
    the held-out NMSE reaches it (each step timed; the evaluations between them are not), up to the
    ``order`` rows prepared (3x the steps)."""
    from course_lib import sae  # here, not at the top: the SAELens half runs without course_lib

    data = load_file(str(folder / "data.safetensors"))
    init = load_file(str(folder / "init.safetensors"))
    x, val, order = data["x"], data["val"], data["order"]
    cfg = sae.SAEConfig(d_in=spec["d_in"], n_latents=spec["width"], k=spec["k"], dead_tokens=10**12,
                        kind=spec["kind"], l0_coef=spec["l0_coef"], jump_bandwidth=spec["bandwidth"],
                        jump_init_threshold=spec["init_threshold"])
    model = sae.SparseAutoencoder(cfg)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_pre"):
            getattr(model, name).copy_(init[name])
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"], betas=(0.9, 0.999))
    since = torch.zeros(spec["width"], dtype=torch.long)
    times = []

    def step_once(step: int) -> None:
        batch = x[order[step]]
        t0 = time.perf_counter()
        sae.train_step(model, opt, batch, since)  # the library's own step (fast sparse gradients)
        times.append(time.perf_counter() - t0)

    def val_nmse() -> float:
        with torch.no_grad():
            recon = torch.cat([model(val[i:i + 4096]) for i in range(0, val.shape[0], 4096)])
        return float(sae.evaluation.fvu(val, recon))

    for step in range(spec["steps"]):
        step_once(step)
    with torch.no_grad():
        if spec["kind"] == "batchtopk":  # as SAELens evaluates it: the k * B largest of each 4096-token chunk
            recon = torch.cat([batch_topk_forward(model, val[i:i + 4096]) for i in range(0, val.shape[0], 4096)])
            l0 = float(spec["k"])
        else:
            recon = torch.cat([model(val[i:i + 4096]) for i in range(0, val.shape[0], 4096)])
            l0 = float((model.encode(val) != 0).sum(1).float().mean())
    fixed_times = list(times)
    to_target = None
    if target_nmse is not None and spec["kind"] == "topk":  # train on past the fixed steps
        step, nmse = spec["steps"], val_nmse()
        while nmse > target_nmse and step < order.shape[0]:
            step_once(step)
            step, nmse = step + 1, val_nmse()
        to_target = {"steps": step, "seconds": sum(times), "nmse": nmse, "reached": nmse <= target_nmse}
    return {"times": fixed_times, "nmse": float(sae.evaluation.fvu(val, recon)), "threads": torch.get_num_threads(),
            "l0": l0, "to_target": to_target}


def prepare(folder: Path, args: argparse.Namespace) -> dict:
    from course_lib import sae


    hc = sae.HarvestConfig(n_tokens=args.tokens, seq_len=128)
    store = sae.load_or_harvest(hc, progress=True)
    val_store = sae.load_or_harvest(sae.HarvestConfig(n_tokens=4096, seq_len=128, split="val"))
    x = store.head(len(store))
    val = val_store.head(len(val_store))
    s = math.sqrt(x.shape[1]) / float(x.norm(dim=1).mean())
    x, val = (x * s).contiguous(), (val * s).contiguous()
    gen = torch.Generator().manual_seed(0)
    total = args.steps + args.warmup
    # 3x the steps' batches: the equal-NMSE measurement may train ours past ``total`` steps
    order = torch.stack([torch.randperm(x.shape[0], generator=gen)[: args.batch] for _ in range(3 * total)])
    model = sae.SparseAutoencoder(sae.SAEConfig(d_in=x.shape[1], n_latents=args.width, k=args.k), gen)
    model.init_from_sample(x[:8192])
    init = {n: p.detach().clone().contiguous() for n, p in model.named_parameters()}
    save_file({"x": x, "val": val, "order": order}, str(folder / "data.safetensors"))
    save_file(init, str(folder / "init.safetensors"))
    spread = float((val - val.mean(0)).pow(2).sum(1).mean())  # SAELens's error per token / our NMSE
    spec = {"kind": args.kind, "l0_coef": args.l0_coef, "l0_coef_saelens": args.l0_coef * spread,
            "bandwidth": args.bandwidth, "init_threshold": args.init_threshold,
            "d_in": x.shape[1], "width": args.width, "k": args.k, "batch": args.batch, "lr": args.lr,
            "steps": total, "warmup": args.warmup, "tokens": x.shape[0], "scale_seen_by_sae": float(model.scale)}
    (folder / "spec.json").write_text(json.dumps(spec))
    return spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--width", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--tokens", type=int, default=16_384)
    ap.add_argument("--kind", choices=("topk", "batchtopk", "jumprelu"), default="topk")
    ap.add_argument("--l0-coef", type=float, default=1e-3, help="jumprelu: our L0 coefficient (NMSE scale)")
    ap.add_argument("--bandwidth", type=float, default=0.05, help="jumprelu: straight-through bandwidth")
    ap.add_argument("--init-threshold", type=float, default=0.01, help="jumprelu: initial threshold")
    ap.add_argument("--saelens-half", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.saelens_half is not None:
        saelens_half(args.saelens_half)
        return
    from course_lib import sae
    with tempfile.TemporaryDirectory(prefix="bench_sae_") as tmp:
        folder = Path(tmp)
        spec = prepare(folder, args)
        flops_before = gemm_flops(args.batch, spec["d_in"], args.width)
        theirs = None
        if not BENCH_PY.exists():
            subprocess.run(["bash", str(ROOT / "bench" / "saelens_venv.sh"), str(SAELENS_VENV)], check=False)
        if BENCH_PY.exists():
            env = {**os.environ, "PYTHONPATH": ""}
            res = subprocess.run([str(BENCH_PY), __file__, "--saelens-half", str(folder)], capture_output=True,
                                 text=True, env=env)
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
            if lines:
                theirs = json.loads(lines[-1][len("RESULT "):])
                val = load_file(str(folder / "data.safetensors"))["val"]
                recon = load_file(str(folder / "recon_saelens.safetensors"))["recon"]
                theirs["nmse"] = sae.evaluation.fvu(val, recon)  # the library's one NMSE, for both halves
            else:
                print("SAELens half failed:\n" + res.stdout[-2000:] + res.stderr[-4000:])
        ours = ours_half(folder, spec, target_nmse=None if theirs is None else theirs["nmse"])
        flops_after = gemm_flops(args.batch, spec["d_in"], args.width)
    flops = statistics.median([flops_before, flops_after])
    one_gemm = 2 * args.batch * spec["d_in"] * args.width / flops
    w = args.warmup
    t_ours = statistics.median(ours["times"][w:])
    print(f"{args.kind} SAE: d_in {spec['d_in']}, width {args.width}, k {args.k}, batch {args.batch}, {args.steps} timed steps "
          f"(+{w} warm-up), lr {args.lr}, {spec['tokens']} SmolLM2 layer-15 tokens, fp32 CPU, "
          f"{ours['threads']} threads")
    print(f"GEMM throughput (encoder-shaped fp32): {flops / 1e9:.1f} GFLOP/s "
          f"(before {flops_before / 1e9:.1f}, after {flops_after / 1e9:.1f}); one-GEMM floor {one_gemm * 1e3:.0f} ms")
    print(f"ours:    {t_ours:.3f} s/step  ({args.batch / t_ours:,.0f} tokens/s)  final NMSE {ours['nmse']:.4f}  "
          f"L0 {ours['l0']:.1f}  "
          f"fraction of one-GEMM floor {one_gemm / t_ours:.2f}")
    if theirs is not None:
        t_sl = statistics.median(theirs["times"][w:])
        print(f"SAELens: {t_sl:.3f} s/step  ({args.batch / t_sl:,.0f} tokens/s)  final NMSE {theirs['nmse']:.4f}  "
              f"L0 {theirs['l0']:.1f}  "
              f"fraction of six-GEMM floor {6 * one_gemm / t_sl:.2f}")
        print(f"step-time ratio SAELens / ours: {t_sl / t_ours:.2f}x;  NMSE difference ours - SAELens: "
              f"{ours['nmse'] - theirs['nmse']:+.4f}")
        tt = ours["to_target"]
        if tt is not None:
            t_theirs = sum(theirs["times"])
            print(f"equal NMSE: SAELens reached {theirs['nmse']:.4f} in {spec['steps']} steps, {t_theirs:.2f} s of steps; "
                  f"ours {'reached' if tt['reached'] else 'did NOT reach'} it ({tt['nmse']:.4f}) in {tt['steps']} steps, "
                  f"{tt['seconds']:.2f} s of steps" + (f": time-to-equal-NMSE ratio SAELens / ours "
                                                       f"{t_theirs / tt['seconds']:.2f}x" if tt["reached"] else ""))
    else:
        print(f"SAELens half skipped (no {SAELENS_VENV}; run bench/saelens_venv.sh)")


if __name__ == "__main__":
    main()
