using RetriKT.MLNet.Common;
using RetriKT.MLNet.SoftPrompt;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>PPO's tensor pieces against values worked out by hand (masks, clipping on both sides, whitening, entropy).</summary>
public class PpoMathHandValueTests
{
    [Fact]
    public void WhiteningUsesTheRealTokensOnlyAndLeavesPaddingAtZero()
    {
        TorchDevices.EnsureNativeBackend();
        using var scope = NewDisposeScope();
        // Real entries 1, 2, 3 (mean 2, variance 2/3); the 100 is padding and must not move the statistics.
        var x = tensor(new float[] { 1, 2, 3, 100 }, 1, 4);
        var mask = tensor(new float[] { 1, 1, 1, 0 }, 1, 4);
        double s = Math.Sqrt(1.5); // 1 / sqrt(2/3)
        var w = PpoMath.Whiten(x, mask).data<float>().ToArray();
        AssertClose([-s, 0, s, 0], w);
        var kept = PpoMath.Whiten(x, mask, shiftMean: false).data<float>().ToArray();
        AssertClose([2 - s, 2, 2 + s, 0], kept);
    }

    private static void AssertClose(double[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 5);
    }

    [Fact]
    public void WhiteningEqualAdvantagesGivesZerosNotNaN()
    {
        TorchDevices.EnsureNativeBackend();
        using var scope = NewDisposeScope();
        var w = PpoMath.Whiten(PpoMathTests.Filled(2, 3, 0.7f), ones(2, 3)).data<float>().ToArray();
        Assert.All(w, v => Assert.Equal(0f, v));
        var empty = PpoMath.Whiten(ones(2, 3), zeros(2, 3)).data<float>().ToArray(); // no real token at all
        Assert.All(empty, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void ClippedSurrogateWithANegativeAdvantageClipsTheRatioFromBelow()
    {
        TorchDevices.EnsureNativeBackend();
        using var scope = NewDisposeScope();
        var old = zeros(1, 2);
        var advantages = PpoMathTests.Filled(1, 2, -1f);
        // Ratio 2 with A = −1: the unclipped term 2 is the larger (pessimistic) one, nothing clipped.
        var (lossUp, clipUp, klUp) = PpoMath.PolicyLoss(PpoMathTests.Filled(1, 2, MathF.Log(2f)), old, advantages, ones(1, 2), 0.2);
        Assert.Equal(2f, lossUp.item<float>(), 5);
        Assert.Equal(0f, clipUp.item<float>());
        Assert.Equal(0.5 * Math.Log(2) * Math.Log(2), klUp.item<float>(), 5);
        // Ratio 0.5 with A = −1: clipped at 0.8, which is the larger; padding (the second slot) counts for nothing.
        var (lossDown, clipDown, _) = PpoMath.PolicyLoss(tensor(new[] { MathF.Log(0.5f), 5f }, 1, 2), old, advantages, tensor(new float[] { 1, 0 }, 1, 2), 0.2);
        Assert.Equal(0.8f, lossDown.item<float>(), 5);
        Assert.Equal(1f, clipDown.item<float>());
    }

    [Fact]
    public void ValueLossTakesTheLargerOfTheClippedAndUnclippedErrors()
    {
        TorchDevices.EnsureNativeBackend();
        using var scope = NewDisposeScope();
        var values = tensor(new float[] { 1.0f, 0.0f, 9f }, 1, 3);
        var old = tensor(new float[] { 0.5f, 0.5f, 0f }, 1, 3);
        var returns = tensor(new float[] { 2.0f, 0.0f, 0f }, 1, 3);
        var mask = tensor(new float[] { 1, 1, 0 }, 1, 3);
        // Token 0: (1−2)² = 1 against (0.7−2)² = 1.69; token 1: 0 against (0.3−0)² = 0.09; token 2 is padding.
        Assert.Equal(0.5 * (1.69 + 0.09) / 2, PpoMath.ValueLoss(values, old, returns, mask, 0.2).item<float>(), 5);
    }

    [Fact]
    public void EntropyOfAKnownDistribution()
    {
        TorchDevices.EnsureNativeBackend();
        using var scope = NewDisposeScope();
        // Row 2: logits so far apart that the other tokens' probabilities underflow to 0 (what log_softmax gives the
        // entropy: finite log-probabilities, never −∞).
        var logp = cat([tensor(new[] { 0.5f, 0.25f, 0.25f }, 1, 1, 3).log(), tensor(new[] { 0f, -1e4f, -1e4f }, 1, 1, 3).log_softmax(-1)], 1);
        var h = PpoMath.Entropy(logp).data<float>().ToArray();
        Assert.Equal(1.5 * Math.Log(2), h[0], 5);
        Assert.Equal(0f, h[1], 6); // a certain token: 0, not NaN
    }

    [Fact]
    public void AdaptiveKlLowersTheCoefficientByTheClippedErrorWhenKlIsBelowTarget()
    {
        var controller = new AdaptiveKlController(0.05, target: 4, horizon: 1000);
        controller.Update(observedKl: 3, samples: 16);   // error 3/4 − 1 = −0.25, clipped to −0.2
        Assert.Equal(0.05 * (1 - 0.2 * 16 / 1000.0), controller.Value, 12);
        controller.Update(observedKl: 4.4, samples: 16); // error +0.1
        Assert.Equal(0.05 * (1 - 0.2 * 16 / 1000.0) * (1 + 0.1 * 16 / 1000.0), controller.Value, 12);
    }
}
