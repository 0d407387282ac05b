"""Stand-ins that route the chain's spatial fit through the fidelity prototypes.

Until the steps call :mod:`psfmatch.pooled_fit` and :mod:`psfmatch.spatial_order`
themselves, the tests and bench/fidelity replace ``psfmatch.spatial.
fit_spatial_reducing_order`` (which ``steps.spatial_fit`` imports at call time) by one of
these wrappers, with pytest's ``monkeypatch`` or :func:`patched`.
"""

from __future__ import annotations

import contextlib

import numpy as np

from psfmatch import spatial


def pooled_df(original, *, records=None, **options):
    """Wrapper: a delta-function basis without PCA gets the pooled regularized fit."""
    from psfmatch.pooled_fit import fit_pooled_regularized
    from psfmatch.regularization import regularization_matrix

    def wrapped(centres, matrices, vectors, *, n_basis, kernel_function, background_function,
                constant_first_term, compute_covariance=False, **kw):
        k = int(round(np.sqrt(n_basis)))
        if constant_first_term or k * k != n_basis or n_basis < 49:
            return original(centres, matrices, vectors, n_basis=n_basis,
                            kernel_function=kernel_function,
                            background_function=background_function,
                            constant_first_term=constant_first_term,
                            compute_covariance=compute_covariance, **kw)
        res = fit_pooled_regularized(centres, np.asarray(matrices), np.asarray(vectors),
                                     regularization_matrix(k), n_basis=n_basis,
                                     kernel_function=kernel_function,
                                     background_function=background_function,
                                     compute_covariance=compute_covariance, **options)
        if records is not None:
            records.append({**(res.choice.to_dict() if res.choice else {}),
                            "value": res.regularization_lambda, "pilot": res.pilot_lambda})
        attempt = {"kernel_order": kernel_function.order,
                   "background_order": None if background_function is None
                   else background_function.order,
                   "geometric_condition": None, "condition_number": res.fit.condition_number,
                   "refused": None}
        return spatial.ReducedOrderFit(res.fit, kernel_function, background_function, [attempt])

    return wrapped


def auto_order(original, *, records=None, orders=(0, 1, 2, 3, 4)):
    """Wrapper: the kernel's spatial order is chosen by cross-validation first."""
    from psfmatch.spatial_order import cross_validated_order

    def wrapped(centres, matrices, vectors, *, n_basis, kernel_function, background_function,
                constant_first_term, **kw):
        choice = cross_validated_order(centres, matrices, vectors, n_basis=n_basis,
                                       kernel_function=kernel_function,
                                       background_function=background_function,
                                       constant_first_term=constant_first_term, orders=orders)
        if records is not None:
            records.append({"order": choice.order, "scores": choice.scores})
        kf = spatial.SpatialFunction(choice.order, kernel_function.model_type,
                                     kernel_function.bbox)
        return original(centres, matrices, vectors, n_basis=n_basis, kernel_function=kf,
                        background_function=background_function,
                        constant_first_term=constant_first_term, **kw)

    return wrapped


@contextlib.contextmanager
def patched(factory, **options):
    """``with patched(pooled_df): run_pair(...)`` (restores the original afterwards)."""
    original = spatial.fit_spatial_reducing_order
    spatial.fit_spatial_reducing_order = factory(original, **options)
    try:
        yield
    finally:
        spatial.fit_spatial_reducing_order = original
