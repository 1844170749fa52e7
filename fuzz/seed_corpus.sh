#!/usr/bin/env bash
# Copies a few dozen small TIFFs from the shared data folder into fuzz/corpus/decode/.
# The shared files are not committed; the corpus directory is git-ignored.
#
# Usage: fuzz/seed_corpus.sh [SHARED_DATA]   (default: ../shared/data next to the repository,
#        or $CANOPY_SHARED_DATA)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${1:-${CANOPY_SHARED_DATA:-$here/../../shared/data}}/geotiff"
out="$here/corpus/decode"
if [ ! -d "$data" ]; then
    echo "no $data; pass the shared data folder as the first argument" >&2
    exit 1
fi
mkdir -p "$out"
n=0
# copy DIR MAXSIZE(find -size) COUNT: the COUNT smallest matching files of DIR (not recursive).
copy() {
    local dir="$data/$1" size="$2" count="$3"
    [ -d "$dir" ] || return 0
    while IFS= read -r f; do
        # Name the copy after its origin so provenance stays visible.
        local rel="${f#"$data"/}"
        cp "$f" "$out/$(printf '%s' "$rel" | tr '/ =,' '____')"
        n=$((n + 1))
    done < <(find "$dir" -maxdepth 1 -type f ! -name '*.json' ! -name '*.aux.xml' -size "-$size" \
                 -printf '%s %p\n' | sort -n | head -n "$count" | cut -d' ' -f2-)
}
# Codec/layout variants (JPEG, YCbCr, WebP, LERC, predictors, band/pixel, BigTIFF, overviews).
copy variants 160k 40
copy rasterio 64k 16
copy image-tiff/images 32k 24
copy image-tiff/images/bigtiff 32k 3
copy image-tiff/geotiff 64k 2
copy georust-geotiff 64k 6
# image-tiff's own fuzz crashers: small, and good at reaching error paths.
copy image-tiff/fuzz_images/oor_panic 16k 10
copy image-tiff/fuzz_images/oom_crash 16k 10
copy image-tiff/fuzz_images/inf_loop 16k 4
copy image-tiff/fuzz_images/divide_by_zero 16k 10
echo "copied $n seeds into $out"
