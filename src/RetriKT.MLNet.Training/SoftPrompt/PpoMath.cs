using RetriKT.MLNet.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.SoftPrompt;

/// <summary>
/// The PPO pieces (Schulman et al. 2017; the RLHF form of Ziegler et al. 2019 as in HF TRL), as pure tensor
/// functions over <c>[B, T]</c> response tensors with a 0/1 <c>mask</c> of real (non-padding) response tokens.
/// Every number reaches torch as a held Scalar and every add has its alpha (see <see cref="HeldScalars"/>): the
/// settings' values as locals alive across their calls.
/// </summary>
internal static class PpoMath
{
    /// <summary>Mean over masked entries.</summary>
    public static Tensor MaskedMean(Tensor x, Tensor mask) => x.mul(mask).sum().div(mask.sum().clamp_min(HeldScalars.One));

    /// <summary>Zero-mean, unit-variance over masked entries (advantage whitening); masked-out entries become 0.</summary>
    public static Tensor Whiten(Tensor x, Tensor mask, bool shiftMean = true)
    {
        var mean = MaskedMean(x, mask);
        var variance = MaskedMean(x.sub(mean).pow(HeldScalars.Two), mask);
        var whitened = x.sub(mean).mul(variance.add(HeldScalars.WhitenEpsilon, HeldScalars.One).rsqrt());
        if (!shiftMean) whitened = whitened.add(mean, HeldScalars.One);
        return whitened.mul(mask);
    }

    /// <summary>
    /// Per-token rewards: <c>−β·(log π(a_t) − log π_ref(a_t))</c> at every response token, plus the sequence score at
    /// each row's last real token. Returns the rewards and the per-token KL estimate.
    /// </summary>
    public static (Tensor Rewards, Tensor Kl) TokenRewards(Tensor score, Tensor logProbs, Tensor refLogProbs, Tensor mask, double klCoefficient)
    {
        using var minusBeta = (-klCoefficient).ToScalar();
        var kl = logProbs.sub(refLogProbs).mul(mask);
        var rewards = kl.mul(minusBeta);
        var last = mask.sum(1).sub(HeldScalars.One).clamp_min(HeldScalars.Zero).to(ScalarType.Int64); // index of the last real token per row
        rewards = rewards.scatter_add(1, last.unsqueeze(1), score.unsqueeze(1).to(rewards.dtype));
        return (rewards.mul(mask), kl);
    }

    /// <summary>Generalised advantage estimation, backwards over time; padding steps carry nothing.</summary>
    public static (Tensor Advantages, Tensor Returns) Gae(Tensor rewards, Tensor values, Tensor mask, double gamma, double lambda)
    {
        using Scalar discount = gamma.ToScalar(), traceDecay = (gamma * lambda).ToScalar();
        long steps = rewards.shape[1];
        var advantages = new Tensor[steps];
        var lastAdvantage = zeros_like(rewards.select(1, 0));
        for (long t = steps - 1; t >= 0; t--)
        {
            var m = mask.select(1, t);
            var nextValue = t + 1 < steps ? values.select(1, t + 1).mul(mask.select(1, t + 1)) : zeros_like(m);
            var delta = rewards.select(1, t).add(nextValue.mul(discount), HeldScalars.One).sub(values.select(1, t));
            lastAdvantage = delta.add(lastAdvantage.mul(traceDecay), HeldScalars.One).mul(m);
            advantages[t] = lastAdvantage;
        }
        var adv = stack(advantages, 1);
        return (adv, adv.add(values, HeldScalars.One).mul(mask));
    }

    /// <summary>Clipped surrogate policy loss with its clip fraction and approximate KL to the rollout policy.</summary>
    public static (Tensor Loss, Tensor ClipFraction, Tensor ApproxKl) PolicyLoss(Tensor logProbs, Tensor oldLogProbs, Tensor advantages, Tensor mask, double clip)
    {
        using Scalar ratioMin = (1 - clip).ToScalar(), ratioMax = (1 + clip).ToScalar();
        var logRatio = logProbs.sub(oldLogProbs);
        var ratio = logRatio.exp();
        var unclipped = advantages.neg().mul(ratio);
        var clipped = advantages.neg().mul(ratio.clamp(ratioMin, ratioMax));
        var loss = MaskedMean(maximum(unclipped, clipped), mask);
        var clipFraction = MaskedMean(clipped.gt(unclipped).to(logProbs.dtype), mask);
        var approxKl = MaskedMean(logRatio.pow(HeldScalars.Two).mul(HeldScalars.Half), mask);
        return (loss, clipFraction, approxKl);
    }

    /// <summary>Clipped value loss (TRL form): 0.5·max((V−R)², (clip(V, V_old ± c)−R)²).</summary>
    public static Tensor ValueLoss(Tensor values, Tensor oldValues, Tensor returns, Tensor mask, double clip)
    {
        using Scalar lower = (-clip).ToScalar(), upper = clip.ToScalar();
        var clippedValues = oldValues.add(values.sub(oldValues).clamp(lower, upper), HeldScalars.One);
        var loss = maximum(values.sub(returns).pow(HeldScalars.Two), clippedValues.sub(returns).pow(HeldScalars.Two));
        return MaskedMean(loss, mask).mul(HeldScalars.Half);
    }

    /// <summary>Entropy of each position's token distribution <c>[B, T]</c>, from log-probabilities <c>[B, T, V]</c>.</summary>
    public static Tensor Entropy(Tensor logProbs) => logProbs.exp().mul(logProbs).sum(-1).neg();
}

/// <summary>
/// Adaptive KL coefficient (Ziegler et al. 2019): β ← β·(1 + clip((KL/target − 1), −0.2, 0.2)·n/horizon), so the
/// policy stays near the stage-1 prompt's distribution without hand-tuning β.
/// </summary>
public sealed class AdaptiveKlController
{
    private readonly double _target, _horizon;

    /// <summary>Creates the controller with an initial coefficient, target KL (nats per sample) and horizon (samples).</summary>
    public AdaptiveKlController(double initial, double target, double horizon)
    {
        if (initial < 0) throw new ArgumentOutOfRangeException(nameof(initial), $"initial KL coefficient must be >= 0, found {initial}.");
        if (target <= 0) throw new ArgumentOutOfRangeException(nameof(target), $"target KL must be > 0, found {target}.");
        if (horizon <= 0) throw new ArgumentOutOfRangeException(nameof(horizon), $"horizon must be > 0, found {horizon}.");
        Value = initial;
        _target = target;
        _horizon = horizon;
    }

    /// <summary>The current coefficient β.</summary>
    public double Value { get; private set; }

    /// <summary>Updates β from the observed mean KL over <paramref name="samples"/> new samples.</summary>
    public void Update(double observedKl, int samples)
    {
        double error = Math.Clamp(observedKl / _target - 1, -0.2, 0.2);
        Value *= 1 + error * samples / _horizon;
    }
}
