"""odir-ngc: ODIR-5K eyes (Peking University 2019) in one class folder each, normal / glaucoma / cataract, read as
an ``imagefolder``; the ODIR id before ``_left``/``_right`` is the patient."""
from .imagefolder import load_imagefolder
from .odir import ODIR_LICENCE
from .registry import CLASS, register

register("odir-ngc", base="imagefolder", annotation=CLASS, licence=ODIR_LICENCE, title="ODIR-5K",
         layout="{normal,glaucoma,cataract}/<ID>_{left,right}.jpg")(load_imagefolder)
