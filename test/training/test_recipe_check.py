"""The recipe check (``python -m rgbd_seg_ros.tools.recipe_check``) on one small paper recipe:
the report it prints holds its invariants, so the tool that gives issue evidence cannot rot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rgbd_seg_ros.tools import recipe_check as rc


@pytest.mark.slow
def test_recipe_check_reports_counts_and_losses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'check.json'
    # RFBNet(ERFNetEnc): two unimodal stages from the ERFNet authors' ImageNet file, a fusion
    # stage initialised from them; small enough for one step of each stage
    assert rc.main(['--recipes', 'rfbnet_erfnet', '--steps', '1', '--json', str(out)]) == 0
    printed = capsys.readouterr().out
    (recipe,) = json.loads(out.read_text())['recipes']
    assert recipe['recipe'] == 'rfbnet_erfnet' and recipe['error'] is None
    assert set(recipe['weight_files']) == {'rgb', 'depth'}
    assert 'stages.0.steps=1' in recipe['overrides']
    stages = {s['name']: s for s in recipe['stages']}
    assert list(stages) == ['unimodal_rgb', 'unimodal_depth', 'fusion']
    for s in stages.values():
        assert s['parameters'] > 0
        assert s['trained'] + s['frozen'] == s['parameters']
        assert [x['step'] for x in s['steps']] == [1]
        assert all(math.isfinite(x['loss']) and x['terms']['loss_main'] > 0 for x in s['steps'])
    # each unimodal stage took its stream's file (every encoder parameter), the fusion stage
    # takes both encoders from them (init_from), not from the files
    rgb, depth = stages['unimodal_rgb'], stages['unimodal_depth']
    assert set(rgb['initialised']) == {'rgb'} and set(depth['initialised']) == {'depth'}
    assert 0 < rgb['initialised']['rgb'] < rgb['parameters']
    # counted independently: that many parameters hold the file's values after initialisation
    assert rgb['equal_to_file'] == rgb['initialised']
    assert depth['equal_to_file'] == depth['initialised']
    assert rgb['layouts'] == {'rgb': 'erfnet-imagenet'}
    assert stages['fusion']['initialised'] == {}
    assert '### rfbnet_erfnet: 3 stage(s)' in printed
    assert f'| unimodal_rgb | {rgb["parameters"]:,} |' in printed
    assert 'FAILED' not in printed


def test_a_failed_invariant_is_reported() -> None:
    stage = rc.StageCheck('s', 10, 7, 2, {'rgb': 4}, {'rgb': 'torchvision'}, [], [])
    check = rc.RecipeCheck('x', [], {'rgb': 'f.pth', 'depth': 'g.pth'}, [stage])
    problems = check.problems()
    assert 's: trained + frozen != parameters' in problems
    assert 's: a missing or non-finite loss' in problems
    assert "files no stage loaded: ['depth']" in problems
    assert "s: the loader reports {'rgb': 4} parameters initialised, {} equal the files" in (
        problems
    )
    stage.frozen = 3
    stage.equal_to_file = {'rgb': 4}
    stage.steps = [rc.StepLoss(1, float('nan'), {})]
    assert check.problems() == [
        's: a missing or non-finite loss',
        "files no stage loaded: ['depth']",
    ]
    stage.steps = [rc.StepLoss(1, 2.5, {'loss_main': 2.5})]
    check.weight_files.pop('depth')
    assert check.problems() == []
