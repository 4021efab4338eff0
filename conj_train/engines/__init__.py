"""Generation engines behind one small interface (see :mod:`conj_train.engines.base`)."""
