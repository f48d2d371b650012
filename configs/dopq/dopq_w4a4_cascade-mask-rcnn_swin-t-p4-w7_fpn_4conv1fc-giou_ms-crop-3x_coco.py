_base_ = [
    '../float/cascade-mask-rcnn_swin-t-p4-w7_fpn_4conv1fc-giou_ms-crop-3x_coco.py',
    '../_base_/quant/dopq_w4a4.py',
    '../_base_/calib/coco_train_calib32.py',
]
model = dict(
    _delete_=True, type='mmdopq.QuantizedModel', architecture=_base_.model, quant=_base_.quant
)
