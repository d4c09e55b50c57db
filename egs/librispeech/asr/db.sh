# db.sh -- where the corpora live on this site (sourced by run.sh). Fill in, or export the
# variable, or pass --corpus-dir to run.sh. Empty by default: nothing is downloaded.
#
# LIBRISPEECH: the LibriSpeech dir from openslr.org/12 (or its parent), holding SPEAKERS.TXT and
#              <part>/<spk>/<chapter>/*.flac + *.trans.txt for dev-clean, dev-other, test-clean,
#              test-other, train-clean-100, train-clean-360, train-other-500.
LIBRISPEECH=${LIBRISPEECH:-}
