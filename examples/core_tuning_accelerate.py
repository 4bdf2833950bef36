"""Core-tuning (or any registered method: AdaptiveMix, L2-SP, BSS, DELTA, Co-Tuning, CE) in a hand-written
Accelerate loop.

``CoreTuningLoss`` is a plain torch module: give it pooled features, labels, a classifier and a projector
and it returns the loss and its parts. Here the model's own forward calls it; the loop is ordinary.

    python examples/core_tuning_accelerate.py
    accelerate launch --num_processes 4 --mixed_precision bf16 examples/core_tuning_accelerate.py --model convnext_tiny
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 examples/core_tuning_accelerate.py --steps 20   # 2 CPU processes
"""

import argparse

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from hubtune.data import build_transforms, collate_image_batch, load_image_classification_data, with_transforms
from hubtune.methods import available_methods
from hubtune.modeling import HubtuneForImageClassification


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eta", type=float, default=0.1)
    p.add_argument("--method", default="core-tuning", choices=available_methods())
    p.add_argument("--pretrained", action="store_true", help="load the backbone's pretrained weights")
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--output-dir", default="core-tuning-accelerate-output")
    args = p.parse_args()

    accelerator = Accelerator()
    data = load_image_classification_data(args.dataset, max_train_samples=args.max_train_samples)
    model = HubtuneForImageClassification.from_backbone(
        args.model, id2label=data.id2label, method=args.method, image_size=args.image_size, pretrained=args.pretrained,
        method_config={"eta": args.eta} if args.method == "core-tuning" else None,
    )
    train_dl = DataLoader(
        with_transforms(data.train, build_transforms(model.preprocessing, train=True)),
        batch_size=args.batch_size, shuffle=True, drop_last=True, collate_fn=collate_image_batch,
    )
    eval_dl = DataLoader(
        with_transforms(data.eval, build_transforms(model.preprocessing, train=False)),
        batch_size=args.batch_size, collate_fn=collate_image_batch,
    )
    # No weight decay where the method's own penalty replaces it (L2-SP: everything; DELTA: the new head).
    no_decay = model.method.no_weight_decay(model)
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for name, p in params if name not in no_decay]},
                                   {"params": [p for name, p in params if name in no_decay], "weight_decay": 0.0}],
                                  lr=args.lr)
    model, optimizer, train_dl, eval_dl = accelerator.prepare(model, optimizer, train_dl, eval_dl)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.method.prepare(unwrapped, train_dl)  # Co-Tuning's p(y_s|y_t), summed over processes; else nothing

    step = 0
    while step < args.steps:
        model.train()
        for batch in train_dl:
            out = model(**batch)  # the method's loss in training mode
            accelerator.backward(out.loss)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step % 10 == 0:
                parts = {k: round(float(v), 4) for k, v in out.loss_components.items()}
                accelerator.print(f"step {step}: loss {out.loss.item():.4f} {parts}")
            if step >= args.steps:
                break

    model.eval()
    correct = total = 0
    for batch in eval_dl:
        with torch.no_grad():
            logits = model(pixel_values=batch["pixel_values"]).logits
        preds, labels = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
        correct += (preds == labels).sum().item()
        total += labels.numel()
    accelerator.print(f"eval_accuracy={correct / total:.4f} ({accelerator.num_processes} processes)")
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(args.output_dir)


if __name__ == "__main__":
    main()
