"""hubtune: Core-tuning and AdaptiveMix for timm and transformers backbones."""

__version__ = "0.1.0"
