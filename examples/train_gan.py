"""Train a GAN with the AdaptiveMix discriminator regulariser, then load and sample its generator.

One process (CPU or one GPU)::

    python examples/train_gan.py --steps 500 --output-dir gan-digits

Several GPUs, bf16 (each process draws its own batch of 64)::

    accelerate launch --num_processes 2 --mixed_precision bf16 examples/train_gan.py --output-dir gan-digits

Two processes on a CPU-only machine (gloo; with accelerate 1.15 ``accelerate launch --cpu --num_processes 2``
started a single process here, torchrun starts two)::

    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 examples/train_gan.py --output-dir gan-digits

The same from the command line: ``hubtune gan --data digits --arch dcgan --steps 500 --output-dir gan-digits``
(add ``--push-to-hub ORG/NAME`` to publish the generator folder).
"""

import argparse

from hubtune.gan import GANTrainingConfig, Generator, push_generator_folder, train_gan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", help="'digits', an image folder or a Hugging Face dataset")
    parser.add_argument("--arch", default="dcgan", choices=["dcgan", "resnet"])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--output-dir", default="gan-digits")
    parser.add_argument("--no-adaptivemix", action="store_true", help="train the baseline without AdaptiveMix")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", default=None)
    args = parser.parse_args()

    config = GANTrainingConfig(
        data=args.data,
        arch=args.arch,
        image_size=32,
        steps=args.steps,
        batch_size=64,
        adaptivemix=not args.no_adaptivemix,
        ada_weight=1.0,          # shrinkage term: 1 - cos(f(x~), lam f(x) + (1 - lam) f(x)[p] + noise)
        ada_preset="default",    # "reference" = the public script's mixed logits + term on the generator step
        output_dir=args.output_dir,
        mixed_precision="no",    # "no" lets `accelerate launch --mixed_precision bf16` decide
    )
    result = train_gan(config)
    if result.generator_dir is None:  # not the main process
        return
    print("FID/KID:", result.metrics)

    generator = Generator.from_pretrained(result.generator_dir)  # or "ORG/NAME" once pushed
    images = generator.generate(num_images=16, seed=0)           # (16, C, 32, 32) in [0, 1]
    print("generated", tuple(images.shape), "from", result.generator_dir)
    if args.push_to_hub:
        print("pushed:", push_generator_folder(result.generator_dir, args.push_to_hub))


if __name__ == "__main__":
    main()
