#!/usr/bin/env bash
# Reproduce one paper's table: every dataset of the preset TABLE whose data and weights exist is evaluated
# with the paper's preset, method and model, and our mIoU is printed beside the published one
# (docs/reproduce.md). A missing dataset or missing weights give one error line each; the rest still runs.
#
#   scripts/reproduce.sh TABLE [extra `gemseg eval` flags, e.g. --device cuda --limit 20]
#
# TABLE: gem, sclip, clearclip, naclip, proxyclip, maskclip, sc-clip, sfp, resclip, resclip-sclip,
#   resclip-clearclip, trident, corrclip, cass, lposs or lposs+ (`gemseg eval --list-presets`). Environment:
#   GEMSEG_DATA        folder holding each dataset under its conventional name (`gemseg eval --list-datasets`,
#                      column "root"), e.g. $GEMSEG_DATA/VOCdevkit/VOC2012 (default: data)
#   GEMSEG_OUT         where the runs go (default: runs/reproduce-TABLE); rerunning resumes them
#   GEMSEG_PYTHON      the Python that has gemseg installed (default: python)
#   GEMSEG_MASKS       corrclip: CorrCLIP's published region masks, one folder per dataset family as
#                      published (voc, context, city, ade, coco; default: data/region_masks)
#   GEMSEG_MODEL, GEMSEG_PRETRAINED, GEMSEG_CHECKPOINT
#                      override the table's model (default ViT-B/16, openai); a checkpoint is a local file
# Exit status: 0 when every dataset ran, 1 when something was missing or failed, 2 on bad usage.
set -u

table="${1:-}"
if [[ -z "$table" || "$table" == -* ]]; then
    echo "usage: scripts/reproduce.sh TABLE [gemseg eval flags]  (TABLE: gem, sclip, clearclip, naclip, proxyclip, maskclip, sc-clip, sfp, resclip, resclip-sclip, resclip-clearclip, trident, corrclip, cass, lposs, lposs+)" >&2
    exit 2
fi
shift
py="${GEMSEG_PYTHON:-python}"
data="${GEMSEG_DATA:-data}"
out="${GEMSEG_OUT:-runs/reproduce-$table}"

# one line per dataset of the table: name, root folder, method, model, pretrained, proxy ("-": none),
# published mIoU ("-": none; a trailing "*": second-hand, as tabulated by another paper), the method's
# --proxy-settings on that dataset ("-": none; CASS's and Trident's per-dataset values)
rows="$("$py" - "$table" <<'EOF'
import sys
from gemseg.eval import load_dataset_spec
from gemseg.eval.protocols import PRESETS
from gemseg.eval.presets_propagation import proxy_settings_text
preset = PRESETS.get(sys.argv[1])
if preset is None:
    sys.exit(f"reproduce: error: unknown table {sys.argv[1]!r}; choose from {', '.join(sorted(PRESETS))}")
for name in preset.datasets:
    number = preset.published_for(name)
    published = "-" if number is None else f"{number.miou:.2f}" + ("*" if number.second_hand else "")
    print(name, load_dataset_spec(name).root, preset.method, preset.model, preset.pretrained,
          "-" if preset.proxy is None else preset.proxy.value, published,
          proxy_settings_text(sys.argv[1], name) or "-", sep="\t")
EOF
)" || exit 2

failed=0
model_args=()
read -r _ _ method model pretrained proxy _ <<<"$(head -n1 <<<"$rows")"
proxy_args=()
[[ "$proxy" != "-" ]] && proxy_args=(--proxy "$proxy")
model="${GEMSEG_MODEL:-$model}"
if [[ -n "${GEMSEG_CHECKPOINT:-}" ]]; then
    model_args=(--model "$model" --checkpoint "$GEMSEG_CHECKPOINT")
    weights_label="checkpoint $GEMSEG_CHECKPOINT"
    [[ -f "$GEMSEG_CHECKPOINT" ]] && weights_ok=1 || weights_ok=0
else
    pretrained="${GEMSEG_PRETRAINED:-$pretrained}"
    model_args=(--model "$model" --pretrained "$pretrained")
    weights_label="$model ($pretrained)"
    if err="$("$py" -c "import sys, gemseg; gemseg.create_model(sys.argv[1], pretrained=sys.argv[2])" \
              "$model" "$pretrained" 2>&1)"; then weights_ok=1; else weights_ok=0; fi
fi
if [[ "$weights_ok" != 1 ]]; then
    echo "reproduce: error: weights $weights_label are not available${err:+: $(tail -n1 <<<"$err")}" >&2
    failed=1
fi

results=()
while IFS=$'\t' read -r name root method _ _ _ published settings; do
    root_dir="$data/$root"
    if [[ ! -d "$root_dir" ]]; then
        echo "reproduce: error: $name: no data at $root_dir (set GEMSEG_DATA; see docs/evaluation.md)" >&2
        failed=1
        continue
    fi
    [[ "$weights_ok" == 1 ]] || continue
    settings_args=()
    [[ "$settings" != "-" ]] && settings_args=(--proxy-settings "$settings")
    mask_args=()
    if [[ "$method" == corrclip ]]; then  # CorrCLIP's published masks: data/region_masks/{voc,context,city,ade,coco}
        case "$name" in voc*) sub=voc ;; context*) sub=context ;; cityscapes) sub=city ;; ade*) sub=ade ;; *) sub=coco ;; esac
        mask_args=(--masks "files:${GEMSEG_MASKS:-data/region_masks}/$sub")
    fi
    if "$py" -m gemseg.cli eval --dataset "$name" --data-root "$root_dir" --preset "$table" --method "$method" \
            "${proxy_args[@]}" "${mask_args[@]}" "${settings_args[@]}" "${model_args[@]}" --out "$out/$name" --no-progress "$@"; then
        ours="$("$py" -c "import json, sys; m = json.load(open(sys.argv[1]))['metrics']; \
v = m.get('mIoU', m.get('p-mIoU')); print('-' if v is None else f'{v:.2f}')" "$out/$name/result.json")"
        results+=("$name"$'\t'"$ours"$'\t'"$published")
    else
        echo "reproduce: error: $name: gemseg eval failed (see above)" >&2
        failed=1
    fi
done <<<"$rows"

if ((${#results[@]})); then
    printf '\n%-14s %8s %10s\n' "$table" "ours" "published"
    for row in "${results[@]}"; do
        IFS=$'\t' read -r name ours published <<<"$row"
        printf '%-14s %8s %10s\n' "$name" "$ours" "$published"
    done
    [[ "${results[*]}" == *"*"* ]] && echo "(* second-hand: tabulated by another paper; sources: docs/reproduce.md)"
fi
exit "$failed"
