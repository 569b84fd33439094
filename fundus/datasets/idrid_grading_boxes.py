"""idrid-grading-boxes: IDRiD disease-grading photos with lesion boxes by C. von Csefalvay (CODRAS 2019), read as
``yolo``. Every lesion was boxed: a photo without a lesion box has none of the boxed lesions."""
from .registry import LESION_BOXES, register
from .yolo import load_yolo

register("idrid-grading-boxes", base="yolo", annotation=LESION_BOXES, exhaustive=True, title="IDRiD",
         licence="CC BY 4.0 images (IDRiD, Porwal et al. 2018), CC BY-SA 4.0 boxes (CODRAS, C. von Csefalvay 2019)",
         layout="as diaretdb1-boxes; every photo has an optic-disc box, clusters of small lesions share one box")(
    load_yolo)
