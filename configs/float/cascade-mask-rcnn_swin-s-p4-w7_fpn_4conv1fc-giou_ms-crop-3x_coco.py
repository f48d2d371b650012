# Cascade Mask R-CNN, Swin-S, FPN, 4conv1fc box heads with GIoU loss, multi-scale + crop, 3x.
# The mmdet 3.x form of the published Swin-Transformer-Object-Detection model
# `cascade_mask_rcnn_swin_small_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py`
# (box/mask AP 51.9/45.0). Same as the Swin-T config but depths (2, 2, 18, 2); drop path 0.2
# as in the original.
_base_ = './cascade-mask-rcnn_swin-t-p4-w7_fpn_4conv1fc-giou_ms-crop-3x_coco.py'

pretrained = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_small_patch4_window7_224.pth'  # noqa: E501
model = dict(
    backbone=dict(
        depths=[2, 2, 18, 2],
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    )
)
