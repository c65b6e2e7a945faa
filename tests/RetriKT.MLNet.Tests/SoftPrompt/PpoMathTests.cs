using RetriKT.MLNet.Common;
using RetriKT.MLNet.SoftPrompt;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.SoftPrompt;

public class PpoMathTests
{
    [Fact]
    public void GaeMatchesAScalarReferenceAndIgnoresPadding()
    {
        TorchDevices.EnsureNativeBackend();
        using var scope = NewDisposeScope();
        float[] r = [0.1f, -0.2f, 0.3f, 1.0f], v = [0.5f, 0.4f, 0.2f, 0.1f];
        double gamma = 0.99, lambda = 0.95;
        // Row 0: 4 real steps; row 1: same values but only the first 2 steps are real.
        var rewards = tensor(r.Concat(r).ToArray(), 2, 4);
        var values = tensor(v.Concat(v).ToArray(), 2, 4);
        var mask = tensor(new float[] { 1, 1, 1, 1, 1, 1, 0, 0 }, 2, 4);
        var (adv, ret) = PpoMath.Gae(rewards, values, mask, gamma, lambda);

        double[] Reference(int steps)
        {
            var a = new double[steps];
            double last = 0;
            for (int t = steps - 1; t >= 0; t--)
            {
                double next = t + 1 < steps ? v[t + 1] : 0;
                double delta = r[t] + gamma * next - v[t];
                last = delta + gamma * lambda * last;
                a[t] = last;
            }
            return a;
        }
        var full = Reference(4);
        var shortRow = Reference(2);
        var got = adv.data<float>().ToArray();
        for (int t = 0; t < 4; t++) Assert.Equal(full[t], got[t], 5);
        Assert.Equal(shortRow[0], got[4], 5);
        Assert.Equal(shortRow[1], got[5], 5);
        Assert.Equal(0f, got[6]);
        Assert.Equal(0f, got[7]);
        Assert.Equal(full[0] + v[0], ret.data<float>()[0], 5);
    }

    [Fact]
    public void ClippedSurrogateStopsRewardingRatiosPastTheClip()
    {
        TorchDevices.EnsureNativeBackend();
        using var scope = NewDisposeScope();
        var old = zeros(1, 3);
        var mask = ones(1, 3);
        var advantages = ones(1, 3);
        var (lossAtOne, clipAtOne, klAtOne) = PpoMath.PolicyLoss(old, old, advantages, mask, 0.2);
        Assert.Equal(-1f, lossAtOne.item<float>(), 5);
        Assert.Equal(0f, clipAtOne.item<float>());
        Assert.Equal(0f, klAtOne.item<float>());
        var (lossFar, clipFar, _) = PpoMath.PolicyLoss(Filled(1, 3, MathF.Log(2f)), old, advantages, mask, 0.2);
        Assert.Equal(-1.2f, lossFar.item<float>(), 5);   // ratio 2 clipped at 1.2 for a positive advantage
        Assert.Equal(1f, clipFar.item<float>());
    }

    [Fact]
    public void TokenRewardsPutTheScoreOnTheLastRealTokenAndPenaliseKl()
    {
        TorchDevices.EnsureNativeBackend();
        using var scope = NewDisposeScope();
        var logp = tensor(new float[] { -1, -1, -1, -2, -2, 0 }, 2, 3);
        var refLogp = tensor(new float[] { -1.5f, -1, -1, -2, -1, 0 }, 2, 3);
        var mask = tensor(new float[] { 1, 1, 1, 1, 1, 0 }, 2, 3);
        var (rewards, kl) = PpoMath.TokenRewards(tensor(new float[] { 2, 3 }), logp, refLogp, mask, 0.1);
        var r = rewards.data<float>().ToArray();
        Assert.Equal(-0.05f, r[0], 5);
        Assert.Equal(2f, r[2], 5);
        Assert.Equal(3f + 0.1f, r[4], 5);  // kl of -1 → +0.1, plus the score
        Assert.Equal(0f, r[5]);
        Assert.Equal(0.5f, kl.data<float>()[0], 5);
    }

    [Fact]
    public void AdaptiveKlRaisesTheCoefficientWhenKlIsAboveTarget()
    {
        var controller = new AdaptiveKlController(0.1, target: 1.0, horizon: 100);
        controller.Update(observedKl: 3.0, samples: 10);
        Assert.Equal(0.1 * (1 + 0.2 * 10 / 100.0), controller.Value, 10);
        controller.Update(observedKl: 0.0, samples: 10);
        Assert.True(controller.Value < 0.1 * 1.02);
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdaptiveKlController(0.1, 0, 100));
    }

    [Fact]
    public void ASampleTooShortForTheStoreEarnsOnlyItsPenalty()
    {
        // A scorer that is surest about the empty text: the reward must still rank a real sample above it.
        var reward = new RetriKTReward(new FixedScorer(t => t.Length == 0 ? [0f, 1f] : [0.4f, 0.6f]), minWords: 3);
        var scores = reward.Score([
            new RolloutSample(1, "", null, "", 1, Finished: true),
            new RolloutSample(1, "ok", null, "ok", 2, Finished: true),
            new RolloutSample(1, "a warm and funny film", null, "a warm and funny film", 6, Finished: true)]);
        Assert.Equal(-0.5, scores[0].Total, 9);
        Assert.Equal((0.0, 0.0), (scores[0].Fidelity, scores[0].Diversity));
        Assert.Equal(-0.5, scores[1].Total, 9);
        Assert.Equal(0.6, scores[2].Fidelity, 6);
        Assert.True(scores[2].Total > 0.6, $"a real sample scores fidelity plus diversity, found {scores[2].Total}");
    }

    private sealed class FixedScorer(Func<string, float[]> probabilities) : ILabelScorer
    {
        public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples) => samples.Select(s => probabilities(s.Text)).ToArray();
    }

    [Fact]
    public void TextStatisticsMeasureDiversityAndRepetition()
    {
        Assert.Equal(1.0, TextStatistics.DistinctN("a fine day for a walk", 2));
        Assert.True(TextStatistics.RepeatedTrigramShare("the cat sat the cat sat the cat sat") > 0.5);
        Assert.Equal(0.0, TextStatistics.RepeatedTrigramShare("a completely fresh sentence here"));
        var a = TextStatistics.HashedNgrams("the movie was great");
        var b = TextStatistics.HashedNgrams("the movie was great");
        Assert.Equal(1f, System.Numerics.Tensors.TensorPrimitives.Dot(a, b), 4);
    }

    /// <summary>
    /// full(rows, columns, value) without the temporary Scalar that full() makes of a number: its finalizer may free it
    /// while torch still reads it (HeldScalarTests). The same values, from an array.
    /// </summary>
    internal static Tensor Filled(long rows, long columns, float value) => tensor(Enumerable.Repeat(value, (int)(rows * columns)).ToArray(), rows, columns);
}
