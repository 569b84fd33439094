"""diaretdb1-boxes: DIARETDB1 photos (Kauppi et al. 2007) with lesion boxes by C. von Csefalvay (CODRAS 2019), read
as ``yolo``. The boxes are incomplete (49 of 89 photos have no lesion box, though only 5 are normal): a missing box
says nothing."""
from .registry import LESION_BOXES, register
from .yolo import load_yolo

register("diaretdb1-boxes", base="yolo", annotation=LESION_BOXES, exhaustive=False, title="DIARETDB1",
         licence="CC BY-SA 4.0 annotations (DIARETDB1 images, Kauppi et al. 2007)",
         layout="images/NNNN.jpg + images/NNNN.txt; retinal.names: optic_disc, hard_exudates, haemorrhage "
                "(haemorrhages and microaneurysms bundled)")(load_yolo)
