"""Core-tune any timm or transformers backbone on any image-classification dataset with the HF Trainer.

The Trainer API is spelled out here; ``hubtune finetune`` runs the same thing from the command line
(``hubtune finetune --method core-tuning --model resnet18 --eta 0.1 ...``, every TrainingArguments option included).

    python examples/core_tuning_trainer.py                                   # resnet18 on digits, CPU, ~1 min
    python examples/core_tuning_trainer.py --model hf-hub:timm/resnet50.a1_in1k --pretrained \
        --dataset uoft-cs/cifar10 --image-size 224 --epochs 10 --bf16
    python examples/core_tuning_trainer.py --model google/vit-base-patch16-224-in21k --pretrained --dataset ./my_images

On several GPUs (or several CPU processes) the same script runs under Accelerate; the contrastive term then
sees the rows of all processes:

    accelerate launch --num_processes 2 examples/core_tuning_trainer.py --model resnet18
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 examples/core_tuning_trainer.py --epochs 1   # 2 CPU processes
"""

import argparse

from transformers import TrainingArguments

from hubtune.data import build_transforms, collate_image_batch, load_image_classification_data, with_transforms
from hubtune.modeling import HubtuneForImageClassification
from hubtune.training import EtaWarmupCallback, HubtuneTrainer, compute_accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eta", type=float, default=0.1)
    p.add_argument("--preset", default="paper", choices=["paper", "reference"])
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides --epochs)")
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--output-dir", default="core-tuning-output")
    args = p.parse_args()

    data = load_image_classification_data(args.dataset, max_train_samples=args.max_train_samples)
    model = HubtuneForImageClassification.from_backbone(
        args.model,
        id2label=data.id2label,
        pretrained=args.pretrained,
        method="core-tuning",
        method_config={"preset": args.preset, "eta": args.eta},
        image_size=args.image_size,
    )
    train_ds = with_transforms(data.train, build_transforms(model.preprocessing, train=True))
    eval_ds = with_transforms(data.eval, build_transforms(model.preprocessing, train=False))

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        logging_steps=10,
        remove_unused_columns=False,  # the image pipeline reads the "image" column in with_transform
        bf16=args.bf16,
        report_to="none",
    )
    trainer = HubtuneTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collate_image_batch,
        compute_metrics=compute_accuracy,
        callbacks=[EtaWarmupCallback(warmup_ratio=0.1)],
        dataset_name=data.name,
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model()  # the backbone library's own layout: loads in plain timm / transformers
    trainer.create_model_card()
    if trainer.is_world_process_zero():
        print(f"eval_accuracy={metrics['eval_accuracy']:.4f}; model in {args.output_dir}")


if __name__ == "__main__":
    main()
