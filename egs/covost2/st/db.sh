# db.sh -- where the corpora live on this site (sourced by run.sh). Fill in, or export the
# variables, or pass --corpus-dir / --tsv-dir to run.sh. Empty by default: nothing is downloaded.
#
# COVOST2:     the Common Voice 4 root (cv-corpus-4-2019-12-10), holding <lang>/clips/*.mp3 and
#              <lang>/validated.tsv for every source language.
# COVOST2_TSV: the dir with the CoVoST 2 TSVs, covost_v2.<src>_en.tsv (release) and/or
#              covost_v2.<src>_en.<split>.tsv (get_covost_splits.py); default: COVOST2.
COVOST2=${COVOST2:-}
COVOST2_TSV=${COVOST2_TSV:-}
