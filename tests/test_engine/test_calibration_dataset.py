"""The calibration hook's dataset options."""

from mmengine.dataset import BaseDataset, ConcatDataset
from mmengine.registry import DefaultScope

from mmdopq.engine.hooks.quant_calibration_hook import accepts_serialize_data


def test_serialize_data_is_only_set_for_base_datasets():
    # BaseDataset subclasses take serialize_data; wrappers such as ConcatDataset would fail on it
    assert accepts_serialize_data(BaseDataset)
    assert not accepts_serialize_data(ConcatDataset)
    with DefaultScope.overwrite_default_scope('mmdet'):
        assert accepts_serialize_data('CocoDataset')
        assert not accepts_serialize_data('ConcatDataset')
        assert not accepts_serialize_data('NoSuchDataset')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        assert accepts_serialize_data('CustomDataset')
