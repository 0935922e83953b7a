#!/bin/bash
# The size of the house (issue 27): lines of the project's own code outside tests, split into what detection and
# scale added (issues 25, 26, 28, 29) and the rest, the features of 5a644e9 (the commit before detection began,
# where the count gives the issue's "12.0k") plus issue 27's own work.
#
#   bash tools/house_size.sh        (in a clone with its history)
#
# Files added since 5a644e9 for those features count whole; inside files that existed at 5a644e9, `git blame` names
# the commit of each line, and lines of those features' commits count to them. Lines that the fold commits rewrote
# count to the rest, even where they serve detection or scale, so the rest is an upper bound.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
declare -A FEATURES=(
  [25]="b0cad15 758943e 5f783e2 3fed9b5 0212931 990e272 249714d 0da5692 46aedec 58a231f 7358613 952fc23 80bf465 e175f69 e3ce131 d752499 92db173 26e9981 6dab548 1b56c0d"
  [26]="b51cc96 e30abdc 9cbe04b"
  [28]="b3e10c9 b03d08e dd91804 cb3f902 1f96879 b016d46 0a80e05"
  [29]="8b0c3e9")
files=$(git ls-files | grep -v '^tests/' | grep -E '\.(py|c)$')
# (the whole tree diffed, so that a file moved from an old one, such as pretrained/caffe.py, is a rename, not an add)
added=$(git diff --name-only --diff-filter=A 5a644e9 HEAD | grep -v '^tests/' | grep -E '\.(py|c)$' |
        grep -v -x -E 'googlenet/api.py|googlenet/pretrained/fetch.py|hubconf.py' || true)  # issue 27's files
old=$(comm -23 <(sort <<< "$files") <(sort <<< "$added"))
total=$(cat $files | wc -l)
added_lines=$(cat $added | wc -l)
blame=$(for f in $old; do git blame -w -M -C -C --line-porcelain HEAD -- "$f" | grep -E '^[0-9a-f]{40} ' | cut -c1-40; done)
echo "non-test .py and .c: $total; files added for detection and scale: $added_lines; the files of 5a644e9 and" \
     "issue 27's: $((total - added_lines))"
rest=$((total - added_lines))
for issue in 25 26 28 29; do
  shas=$(for c in ${FEATURES[$issue]}; do git rev-parse "$c"; done | paste -sd'|')
  n=$(grep -c -E "^($shas)$" <<< "$blame" || true)
  echo "  of which lines of issue $issue's commits: $n"
  rest=$((rest - n))
  [ "$issue" = 28 ] && without_29=$rest
done
echo "the rest: $rest (issue 29's probe cache counted to the rest as well: $without_29); 5a644e9: 12,040"
