# db.sh -- where the corpora live on this site (sourced by run.sh). Fill in, or export the
# variable, or pass --corpus-dir to run.sh. Empty by default: nothing is downloaded.
#
# VOXPOPULI: the VoxPopuli root (the --root of `python -m voxpopuli.get_asr_data`), holding
#            transcribed_data/<lang>/asr_{train,dev,test}.tsv and transcribed_data/<lang>/<year>/*.ogg.
VOXPOPULI=${VOXPOPULI:-}
