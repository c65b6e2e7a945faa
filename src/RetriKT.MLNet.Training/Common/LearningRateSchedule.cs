namespace RetriKT.MLNet.Common;

/// <summary>Learning-rate schedules shared by the pretrainers.</summary>
internal static class LearningRateSchedule
{
    /// <summary>
    /// Linear warmup to <paramref name="peak"/> over <paramref name="warmupSteps"/>, then cosine decay to
    /// <paramref name="minFraction"/> × peak at step <paramref name="steps"/> (steps count from 1).
    /// </summary>
    public static double WarmupCosine(int step, int steps, int warmupSteps, double peak, double minFraction)
    {
        if (warmupSteps > 0 && step <= warmupSteps) return peak * step / warmupSteps;
        double progress = steps <= warmupSteps ? 1 : (double)(step - warmupSteps) / (steps - warmupSteps);
        double min = peak * minFraction;
        return min + 0.5 * (peak - min) * (1 + Math.Cos(Math.PI * Math.Clamp(progress, 0, 1)));
    }
}
