using RetriKT.MLNet.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// Our AdamW (every coefficient a held Scalar) updates parameters bit for bit as TorchSharp's own AdamW does, through a
/// changing learning rate, weight decay, parameter groups and a parameter without a gradient, so rows and teachers
/// trained before it keep their numbers; and its state file is TorchSharp's, so checkpoints resume across the two.
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

    /// <summary>The pretrainers' optimizer: decay on matrices only, as two groups of TorchSharp's AdamW.</summary>
    [Fact]
    public void DecayingMatricesEqualsTorchSharpsAdamWWithTwoGroupsBitForBit()
    {
        using var problem = new TwoLayerProblem(5);
        using var theirs = TheirDecayingMatrices(problem.Theirs);
        using var ours = HeldAdamW.DecayingMatrices(problem.Ours, 0.02, 0.9, 0.95, 0.1);
        StepSideBySide(30, step => 0.02 * (1 - step / 40.0), theirs, ours, () => problem.Loss(problem.Theirs), () => problem.Loss(problem.Ours));
        for (int i = 0; i < problem.Ours.Length; i++)
        {
            Assert.True(Same(problem.Theirs[i], problem.Ours[i]), $"parameter {i} ({problem.Ours[i].dim()}-d) differs from TorchSharp's AdamW");
            Assert.False(Same(problem.Ours[i], problem.Initial[i]), $"parameter {i} did not move");
        }
    }

    /// <summary>
    /// A state saved by TorchSharp's AdamW mid-run (a pretraining checkpoint written before this optimizer) continues
    /// here, and ours continues in TorchSharp's, with the same numbers as a run that never stopped.
    /// </summary>
    [Fact]
    public void StateFilesMoveBetweenTorchSharpsAdamWAndOursAndTheRunGoesOnBitForBit()
    {
        using var folder = new Infrastructure.TempDir("retrikt-adamw-");
        var theirFile = Path.Combine(folder.Path, "theirs.bin");
        var ourFile = Path.Combine(folder.Path, "ours.bin");
        Func<int, double> rate = step => 0.01 + 0.001 * step;

        // The run that never stops, and a twin that saves after 12 steps.
        using var problem = new TwoLayerProblem(9);
        var (through, twin) = (problem.Theirs, problem.Ours);
        using var throughOptimizer = TheirDecayingMatrices(through);
        using (var twinOptimizer = TheirDecayingMatrices(twin))
        {
            StepSideBySide(12, rate, throughOptimizer, twinOptimizer, () => problem.Loss(through), () => problem.Loss(twin));
            twinOptimizer.save_state_dict(theirFile);
        }
        // Ours picks up TorchSharp's file, steps 12 more, saves; TorchSharp's picks up ours and steps 12 more.
        using (var ours = HeldAdamW.DecayingMatrices(twin, 0.02, 0.9, 0.95, 0.1))
        {
            ours.LoadState(theirFile);
            // Written back at the rate of the moment, it is TorchSharp's file byte for byte.
            ours.LearningRate = rate(11);
            var rewritten = Path.Combine(folder.Path, "rewritten.bin");
            ours.SaveState(rewritten);
            Assert.Equal(File.ReadAllBytes(theirFile), File.ReadAllBytes(rewritten));
            StepSideBySide(12, step => rate(step + 12), throughOptimizer, ours, () => problem.Loss(through), () => problem.Loss(twin));
            for (int i = 0; i < through.Length; i++) Assert.True(Same(through[i], twin[i]), $"parameter {i} differs after resuming from TorchSharp's state");
            ours.SaveState(ourFile);
        }
        using (var theirsAgain = TheirDecayingMatrices(twin))
        {
            theirsAgain.load_state_dict(ourFile);
            StepSideBySide(12, step => rate(step + 24), throughOptimizer, theirsAgain, () => problem.Loss(through), () => problem.Loss(twin));
        }
        for (int i = 0; i < through.Length; i++) Assert.True(Same(through[i], twin[i]), $"parameter {i} differs after TorchSharp resumed from our state");

        // A state of other parameters is refused in one line naming the file; so is one of as many parameters in each
        // group, of other shapes (not read into the wrong places).
        using (NewDisposeScope())
        {
            var other = new Parameter(randn(3, 3));
            using var stranger = HeldAdamW.DecayingMatrices([other], 0.01, 0.9, 0.95, 0.1);
            var e = Assert.Throws<InvalidDataException>(() => stranger.LoadState(ourFile));
            Assert.StartsWith(ourFile + ": not the AdamW state of this model's parameters (expected 2 groups of 1 + 0 parameters)", e.Message);
            Assert.DoesNotContain('\n', e.Message);
            Parameter[] transposed = [.. through.Select(p => new Parameter(p.dim() == 2 ? p.detach().t().contiguous() : p.detach().clone()))];
            using var reshaped = HeldAdamW.DecayingMatrices(transposed, 0.01, 0.9, 0.95, 0.1);
            var shapes = Assert.Throws<InvalidDataException>(() => reshaped.LoadState(ourFile));
            Assert.StartsWith(ourFile + ": not the AdamW state of this model's parameters", shapes.Message);
            Assert.DoesNotContain('\n', shapes.Message);
        }
    }

    /// <summary>
    /// The pretrainers' checkpoints write the state through a temp file of their own (AtomicFile.WriteVia): it went through
    /// one fixed 'optimizer.bin.tmp', shared by two writers and left behind by a failed save. A save whose rename fails
    /// (a folder where the file goes) leaves no temp file; one that succeeds leaves only the state, which loads back.
    /// </summary>
    [Fact]
    public void AStateWrittenThroughATempFileLeavesNoneBehind()
    {
        using var folder = new Infrastructure.TempDir("retrikt-adamw-");
        using var problem = new TwoLayerProblem(3);
        using var optimizer = HeldAdamW.DecayingMatrices(problem.Ours, 0.02, 0.9, 0.95, 0.1);
        var taken = Path.Combine(folder.Path, "taken.bin");
        Directory.CreateDirectory(taken);
        Assert.ThrowsAny<IOException>(() => AtomicFile.WriteVia(taken, optimizer.SaveState));
        Assert.Equal([taken], Directory.GetFileSystemEntries(folder.Path));

        var state = Path.Combine(folder.Path, "optimizer.bin");
        AtomicFile.WriteVia(state, optimizer.SaveState);
        Assert.Equal([state, taken], Directory.GetFileSystemEntries(folder.Path).Order(StringComparer.Ordinal));
        optimizer.LoadState(state);
        // A writer that writes nothing is named, not renamed into place.
        var nothing = Path.Combine(folder.Path, "nothing.bin");
        Assert.StartsWith($"Writing '{nothing}' left no file at", Assert.Throws<IOException>(() => AtomicFile.WriteVia(nothing, _ => { })).Message);
    }

    /// <summary>A small two-layer regression: its starting parameters (matrices and vectors), two trainable copies of them and its loss.</summary>
    private sealed class TwoLayerProblem : IDisposable
    {
        private readonly Tensor _x, _target;
        public TwoLayerProblem(int seed)
        {
            manual_seed(seed);
            (_x, _target) = (randn(24, 8), randn(24, 3));
            Initial = [randn(8, 6), randn(6), randn(6, 3), randn(3)];
            (Theirs, Ours) = (Copy(), Copy());
        }

        public Tensor[] Initial { get; }
        public Parameter[] Theirs { get; }
        public Parameter[] Ours { get; }

        public Tensor Loss(Parameter[] p)
            => _x.matmul(p[0]).add(p[1], HeldScalars.One).tanh().matmul(p[2]).add(p[3], HeldScalars.One).sub(_target).pow(HeldScalars.Two).mean();

        private Parameter[] Copy() => Initial.Select(t => new Parameter(t.clone())).ToArray();

        public void Dispose()
        {
            foreach (var t in new[] { _x, _target }.Concat(Initial).Concat(Theirs).Concat(Ours)) t.Dispose();
        }
    }

    // What the pretrainers built before HeldAdamW.DecayingMatrices: TorchSharp's AdamW, decay on matrices only.
    private static AdamW TheirDecayingMatrices(Parameter[] parameters) => optim.AdamW(
        [new AdamW.ParamGroup(parameters.Where(p => p.dim() >= 2), new AdamW.Options { weight_decay = 0.1 }),
         new AdamW.ParamGroup(parameters.Where(p => p.dim() < 2), new AdamW.Options { weight_decay = 0 })],
        0.02, 0.9, 0.95, 1e-8, 0.1);

    /// <summary>The same schedule of rates and the same loss for TorchSharp's optimizer and ours, step by step.</summary>
    private static void StepSideBySide(int steps, Func<int, double> rate, object first, object second, Func<Tensor> firstLoss, Func<Tensor> secondLoss)
    {
        for (int step = 0; step < steps; step++)
        {
            OneStep(first, rate(step), firstLoss);
            OneStep(second, rate(step), secondLoss);
        }
    }

    private static void OneStep(object optimizer, double rate, Func<Tensor> loss)
    {
        using var scope = NewDisposeScope();
        switch (optimizer)
        {
            case HeldAdamW ours:
                ours.LearningRate = rate;
                ours.ZeroGrad();
                loss().backward();
                ours.Step();
                break;
            case optim.Optimizer theirs:
                foreach (var group in theirs.ParamGroups) group.LearningRate = rate;
                theirs.zero_grad();
                loss().backward();
                // The reference makes temporary Scalars (HeldScalars): no collection may run, and so no finalizer free one, during its step.
                bool noCollection = GC.TryStartNoGCRegion(16 << 20);
                try { theirs.step(); }
                finally { if (noCollection && System.Runtime.GCSettings.LatencyMode == System.Runtime.GCLatencyMode.NoGCRegion) GC.EndNoGCRegion(); }
                break;
            default: throw new ArgumentException($"Not an optimizer: {optimizer}.", nameof(optimizer));
        }
    }

    private static bool Same(Tensor a, Tensor b) => a.detach().data<float>().ToArray().SequenceEqual(b.detach().data<float>().ToArray());
}
