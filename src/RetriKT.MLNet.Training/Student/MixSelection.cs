namespace RetriKT.MLNet.Student;

/// <summary>How <see cref="RetrievalClassifierTrainer"/> chooses the prediction's mix (λ, μ, τ, τ_terms) on its validation set.</summary>
public enum MixSelection
{
    /// <summary>The grid point (0.1 steps) of lowest weighted validation NLL.</summary>
    LowestNll = 0,
    /// <summary>
    /// Bagging: the lowest-NLL grid point of each of 200 bootstrap resamples of the validation rows (each group of equally
    /// weighted rows resampled to its own size), λ and μ averaged over them, the temperatures then the lowest-NLL ones at
    /// that mix.
    /// </summary>
    BootstrapAverage = 1,
    /// <summary>
    /// The grid point (0.1 steps, temperatures included) of highest weighted validation accuracy; ties go to the lower NLL.
    /// For thousands of tuning rows, as <see cref="RetrievalClassifierTrainer.TuneMix"/> takes for knowledge added after
    /// training: NLL there punishes term match's confident votes more than it rewards its right ones and keeps the mix near
    /// the head. On tens of rows accuracy moves in steps of a row; NLL is the smoother choice there.
    /// </summary>
    HighestAccuracy = 2,
}
