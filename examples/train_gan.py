"""Train a GAN with the AdaptiveMix discriminator regulariser, then load and sample its generator.

Every field of ``hubtune.gan.GANTrainingConfig`` and every option of the registered architectures is a flag
(``transformers.HfArgumentParser`` over ``hubtune.gan.config.gan_arguments_class()``), and a first positional
``.yaml`` / ``.json`` file may hold them. One process (CPU or one GPU)::

    python examples/train_gan.py --max_steps 500 --output_dir gan-digits

Several GPUs, bf16 (each process draws its own batch of ``--per_device_train_batch_size``)::

    accelerate launch --num_processes 2 examples/train_gan.py --bf16 --output_dir gan-digits

Two processes on a CPU-only machine (gloo)::

    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 examples/train_gan.py --output_dir gan-digits

StyleGAN2 at 256 px on one GPU (the paper256 preset's widths, Adam 0.0025 / (0, 0.99), lazy R1 every 16 steps and
path length; augmentation before AdaptiveMix)::

    python examples/train_gan.py --dataset huggan/AFHQv2 --arch stylegan2 --arch_preset paper256 --image_size 256 \
        --per_device_train_batch_size 32 --bf16 --diffaugment color,translation,cutout --augment_target 0.6 \
        --max_steps 100000 --output_dir afhq-stylegan2

A pretrained timm backbone as the discriminator's features (frozen, two stages, a small trainable head)::

    python examples/train_gan.py --discriminator timm:resnet18.a1_in1k --discriminator_frozen \
        --discriminator_stages 2 3 --output_dir gan-projected

The same from the command line: ``hubtune gan --max_steps 500 --output_dir gan-digits`` (add
``--push_to_hub --hub_model_id ORG/NAME`` to publish the generator with its model card).
"""

import sys

from transformers import HfArgumentParser

from hubtune.commands._parsing import parse_command_line
from hubtune.gan import Generator, train_gan
from hubtune.gan.config import gan_arguments_class


def main(argv: list[str]) -> None:
    parser = HfArgumentParser([gan_arguments_class()], prog="train_gan.py", description=__doc__)
    parser.set_defaults(output_dir="gan-digits", image_size=32, per_device_train_batch_size=64,
                        adaptivemix_shrinkage_weight=1.0,  # shrinkage: 1 - cos(f(x~), sg(lam f(x) + (1 - lam) f(x)[p] + noise))
                        adaptivemix_preset="paper")  # "reference" = the public script's mixed logits + term on the G step
    (arguments,) = parse_command_line(parser, argv)
    config, deprecations = arguments.to_config()
    for line in deprecations:
        print(line, file=sys.stderr)
    result = train_gan(config)
    if not result.is_main_process:
        return
    print("FID/KID:", result.metrics)
    if result.generator_dir is None:  # --no_export_generator
        return
    # the output root holds the final (EMA) generator, like a Trainer's output_dir holds the model
    generator = Generator.from_pretrained(result.output_dir)  # or "ORG/NAME" once pushed
    images = generator.generate(num_images=16, seed=0)        # (16, C, 32, 32) in [0, 1]
    print("generated", tuple(images.shape), "from", result.output_dir)
    if result.hub_url:
        print("pushed:", result.hub_url)


if __name__ == "__main__":
    main(sys.argv[1:])
