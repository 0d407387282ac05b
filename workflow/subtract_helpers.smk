# Helpers of the subtraction modes (rules in workflow/subtract.smk): which science image
# the fit uses, and the final product (difference or score image) with its inputs.


def fit_science_path():
    """The image the matched template is subtracted from (preconvolved with preconvolution)."""
    if DIFFERENCE.preconvolution:
        return "results/{pair}/preconvolve/science.fits"
    return "results/{pair}/input/science.fits"


def final_image_path():
    """The final product: difference.fits, or score.fits with preconvolution."""
    name = "score" if DIFFERENCE.preconvolution else "difference"
    return f"results/{{pair}}/{name}.fits"


def decorrelate_outputs():
    """Outputs of the decorrelate rule (final image, its PSF unless a score, metrics)."""
    outputs = {"image": final_image_path()}
    if not DIFFERENCE.preconvolution:
        outputs["psf"] = "results/{pair}/difference_psf.fits"
    outputs["metrics"] = "results/{pair}/metrics.json"
    return outputs


def decorrelate_inputs(wildcards):
    """Extra input of the decorrelate rule (the PSF the science was preconvolved with)."""
    if DIFFERENCE.preconvolution:
        return {"preconvolution_psf": f"results/{wildcards.pair}/preconvolve/psf.fits"}
    return {}
