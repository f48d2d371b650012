# Parity with the official RepQ-ViT code: its recipe choices (../_base_/quant/repq-official_w4a4.py)
# and its detection protocol (calibration on the first val2017 image). For the published float
# baseline, load the Swin-Transformer-Object-Detection checkpoint (Swin-T Mask R-CNN 3x, SRC)
# converted to mmdet 3.x keys:
#   python -m tools.model_converters.swin_od_to_mmdet SRC checkpoints/mrcnn_swin-t_od.pth \
#       --config THIS
#   python tools/quantize.py THIS checkpoints/mrcnn_swin-t_od.pth
# (the mmdet 3.x model-zoo checkpoint of the other configs also works: another float baseline).
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py',
    '../_base_/quant/repq-official_w4a4.py',
    '../_base_/calib/repq_protocol_val1.py',
]
model = dict(
    _delete_=True, type='mmdopq.QuantizedModel', architecture=_base_.model, quant=_base_.quant
)
