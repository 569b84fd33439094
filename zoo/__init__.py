"""Fundus CAM Zoo: the architectures of the five papers, loading/saving (local or hub), cards, predict.

    import zoo
    model = zoo.create_model("resnet50_fcn", paper="001")      # labels/task/input from the paper
    model.save_pretrained("out/lesions")                        # config.json + model.safetensors + README.md
    model = zoo.load("out/lesions")                             # or a shipped name, or a hub repo id
    zoo.predict(model, ["fundus.jpg"])
"""
from zoo.architectures import ARCHITECTURES, HEADS
from zoo.config import ModelConfig, Preprocessing
from zoo.errors import HubUnavailableError, UnknownModelError, WeightsError
from zoo.factory import create_model, load, push_to_hub, save_pretrained
from zoo.model import FundusNet
from zoo.papers import PAPERS
from zoo.predict import predict

__all__ = [
    "ARCHITECTURES", "HEADS", "PAPERS", "FundusNet", "HubUnavailableError", "ModelConfig", "Preprocessing",
    "UnknownModelError", "WeightsError", "create_model", "load", "predict", "push_to_hub", "save_pretrained",
]
