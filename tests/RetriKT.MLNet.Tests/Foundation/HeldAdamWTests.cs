using RetriKT.MLNet.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// The students' AdamW (every coefficient a held Scalar) updates parameters bit for bit as TorchSharp's own AdamW does,
/// through a changing learning rate, weight decay and a parameter without a gradient; so rows trained before it keep
/// their numbers.
/// </summary>
public class HeldAdamWTests
{
    [Fact]
    public void UpdatesEqualTorchSharpsAdamWBitForBit()
    {
        manual_seed(7);
        using var x = randn(32, 12);
        using var target = randn(32, 5);
        using var w0 = randn(12, 5);
        using var b0 = randn(5);
        using var unused0 = randn(3);
        var (w1, b1, u1) = (new Parameter(w0.clone()), new Parameter(b0.clone()), new Parameter(unused0.clone()));
        var (w2, b2, u2) = (new Parameter(w0.clone()), new Parameter(b0.clone()), new Parameter(unused0.clone()));
        using var theirs = optim.AdamW([w1, b1, u1], 0.01, weight_decay: 0.05);
        using var ours = new HeldAdamW([w2, b2, u2], 0.01, 0.05);
        StepSideBySide(40, step => 0.01 * (1 - 0.9 * step / 39.0), theirs, ours,
            () => x.matmul(w1).add(b1, HeldScalars.One).sub(target).pow(HeldScalars.Two).mean(),
            () => x.matmul(w2).add(b2, HeldScalars.One).sub(target).pow(HeldScalars.Two).mean());
        Assert.True(Same(w1, w2), "weights differ from TorchSharp's AdamW");
        Assert.True(Same(b1, b2), "biases differ from TorchSharp's AdamW");
        Assert.True(Same(u1, u2), "a parameter without a gradient moved differently");
        Assert.False(Same(w1, w0), "the weights did not move");
        Assert.True(Same(u2, unused0), "a parameter without a gradient moved");
    }

    [Fact]
    public void WithoutWeightDecayUpdatesEqualTorchSharpsAdamBitForBit()
    {
        manual_seed(11);
        using var x = randn(16, 6);
        using var target = randn(16, 2);
        using var w0 = randn(6, 2);
        var w1 = new Parameter(w0.clone());
        var w2 = new Parameter(w0.clone());
        using var theirs = optim.Adam([w1], 0.03);
        using var ours = new HeldAdamW([w2], 0.03);
        StepSideBySide(30, step => step < 15 ? 0.03 : 0.015, theirs, ours, // the PPO trainer halves its rate
            () => x.matmul(w1).sub(target).pow(HeldScalars.Two).mean(),
            () => x.matmul(w2).sub(target).pow(HeldScalars.Two).mean());
        Assert.True(Same(w1, w2), "weights differ from TorchSharp's Adam");
        Assert.False(Same(w1, w0), "the weights did not move");
    }

    /// <summary>The same schedule of rates and the same loss for TorchSharp's optimizer and ours, step by step.</summary>
    private static void StepSideBySide(int steps, Func<int, double> rate, optim.Optimizer theirs, HeldAdamW ours, Func<Tensor> theirLoss, Func<Tensor> ourLoss)
    {
        for (int step = 0; step < steps; step++)
        {
            foreach (var group in theirs.ParamGroups) group.LearningRate = rate(step);
            ours.LearningRate = rate(step);
            using (var scope = NewDisposeScope())
            {
                theirs.zero_grad();
                theirLoss().backward();
                theirs.step();
            }
            using (var scope = NewDisposeScope())
            {
                ours.ZeroGrad();
                ourLoss().backward();
                ours.Step();
            }
        }
    }

    private static bool Same(Tensor a, Tensor b) => a.detach().data<float>().ToArray().SequenceEqual(b.detach().data<float>().ToArray());
}
