using RetriKT.MLNet.Student;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// Choosing the prediction's mix on validation rows: the lowest-NLL grid point, its bagged average
/// (<see cref="MixSelection.BootstrapAverage"/>), or the most accurate point (<see cref="MixSelection.HighestAccuracy"/>). Two store entries with opposite soft labels make p_knn and the head
/// each right on a chosen set of rows, so the best λ is known.
/// </summary>
public class MixSelectionTests
{
    /// <summary>
    /// Rows of kind A: the head gives the gold label 0.8, retrieval 0.2; kind B the other way round. Every gold label is 1.
    /// </summary>
    private static (double Lambda, double Nll) Tune(int rowsA, int rowsB, MixSelection selection, int seed = 1, float[]? weights = null)
    {
        using var scope = NewDisposeScope();
        int n = rowsA + rowsB;
        var memory = tensor(new float[] { 1, 0, 0, 1 }, [2, 2]);              // entry 0 near A queries, entry 1 near B
        var softLabels = tensor(new float[] { 0.8f, 0.2f, 0.2f, 0.8f }, [2, 2]);
        var pooled = new float[n * 2]; var head = new float[n * 2];
        for (int i = 0; i < n; i++)
        {
            bool a = i < rowsA;
            pooled[2 * i] = a ? 1 : 0; pooled[2 * i + 1] = a ? 0 : 1;
            head[2 * i] = a ? 0.2f : 0.8f; head[2 * i + 1] = a ? 0.8f : 0.2f;
        }
        var ids = Enumerable.Range(0, n).Select(i => new[] { i }).ToList();
        (Tensor, Tensor) Encode(IReadOnlyList<int[]> rows) => (tensor(pooled, [n, 2]), tensor(head, [n, 2]));
        var best = RetrievalTraining.Tune(Encode, memory, softLabels, ids, Enumerable.Repeat(1, n).ToArray(), weights ?? Enumerable.Repeat(1f, n).ToArray(),
            neighborCount: 1, learnedTemperature: 0.1, fixedLambda: null, termMatches: null, fixedMu: null, CPU, selection, seed);
        return (best.Lambda, best.Nll);
    }

    [Fact]
    public void WhenOnePartIsRightOnEveryRowBothChoicesTakeIt()
    {
        Assert.Equal(1.0, Tune(0, 30, MixSelection.LowestNll).Lambda, 12);
        Assert.Equal(1.0, Tune(0, 30, MixSelection.BootstrapAverage).Lambda, 12); // every resample picks λ = 1
        Assert.Equal(0.0, Tune(30, 0, MixSelection.BootstrapAverage).Lambda, 12);
    }

    [Fact]
    public void TheBaggedMixAveragesTheResamplesChoicesAroundTheLowestNllPoint()
    {
        // 18 A rows, 12 B rows: the head is right more often; the NLL minimum is at λ = 0.3 on the grid.
        var lowest = Tune(18, 12, MixSelection.LowestNll);
        Assert.Equal(0.3, lowest.Lambda, 12);
        var bagged = Tune(18, 12, MixSelection.BootstrapAverage, seed: 1);
        // Resamples with more B rows choose a larger λ, with more A rows a smaller one: the average lies off the grid near 0.3.
        Assert.InRange(bagged.Lambda, 0.15, 0.45);
        Assert.NotEqual(0, Math.Round(bagged.Lambda * 10, 9) % 1); // not a grid point
        Assert.True(bagged.Nll >= lowest.Nll - 0.02, $"bagged NLL {bagged.Nll} far below the grid minimum {lowest.Nll}"); // convex: near the minimum
        // The resamples follow the seed: the same seed, the same mix.
        Assert.Equal(bagged.Lambda, Tune(18, 12, MixSelection.BootstrapAverage, seed: 1).Lambda, 15);
    }

    [Fact]
    public void HighestAccuracyTakesTheMostAccurateMixWhereNllFollowsConfidentVotes()
    {
        // Every gold label is 1. 20 A rows: the head gives 0.55, their neighbour 0.45 (both mild); 10 B rows: the head
        // gives 0.05 (confidently wrong), their neighbour 0.99. NLL is lowest at λ = 1 (right on the 10 B rows only);
        // accuracy is highest, 20 of 30, for λ ≤ 0.4, and among those the NLL is lowest at 0.4.
        using var scope = NewDisposeScope();
        int n = 30;
        var memory = tensor(new float[] { 1, 0, 0, 1 }, [2, 2]);
        var softLabels = tensor(new float[] { 0.55f, 0.45f, 0.01f, 0.99f }, [2, 2]);
        var pooled = new float[n * 2]; var head = new float[n * 2];
        for (int i = 0; i < n; i++)
        {
            bool a = i < 20;
            pooled[2 * i] = a ? 1 : 0; pooled[2 * i + 1] = a ? 0 : 1;
            head[2 * i] = a ? 0.45f : 0.95f; head[2 * i + 1] = a ? 0.55f : 0.05f;
        }
        var ids = Enumerable.Range(0, n).Select(i => new[] { i }).ToList();
        (Tensor, Tensor) Encode(IReadOnlyList<int[]> rows) => (tensor(pooled, [n, 2]), tensor(head, [n, 2]));
        var gold = Enumerable.Repeat(1, n).ToArray();
        var weights = Enumerable.Repeat(1f, n).ToArray();
        var byNll = RetrievalTraining.Tune(Encode, memory, softLabels, ids, gold, weights, 1, 0.1, null, null, null, CPU, MixSelection.LowestNll);
        var byAccuracy = RetrievalTraining.Tune(Encode, memory, softLabels, ids, gold, weights, 1, 0.1, null, null, null, CPU, MixSelection.HighestAccuracy);
        Assert.Equal(1.0, byNll.Lambda, 12);
        Assert.Equal(10.0 / 30, byNll.Accuracy, 5);
        Assert.Equal(0.4, byAccuracy.Lambda, 12);
        Assert.Equal(20.0 / 30, byAccuracy.Accuracy, 5);
        Assert.True(byAccuracy.Nll > byNll.Nll, $"the accurate mix's NLL {byAccuracy.Nll} should exceed the lowest, {byNll.Nll}");
    }

    [Fact]
    public void ResamplesKeepEachWeightGroupsShare()
    {
        // 4 real rows of weight 5 (a share of 20 of 26) and 6 generated rows of weight 1.
        var weights = new float[] { 5, 5, 5, 5, 1, 1, 1, 1, 1, 1 };
        var resamples = RetrievalTraining.BootstrapWeights(weights, samples: 50, seed: 7);
        Assert.Equal(50 * weights.Length, resamples.Length);
        for (int b = 0; b < 50; b++)
        {
            var row = resamples.AsSpan(b * weights.Length, weights.Length);
            float total = 0, real = 0;
            for (int i = 0; i < row.Length; i++) { total += row[i]; if (i < 4) real += row[i]; }
            Assert.Equal(1f, total, 5);
            Assert.Equal(20f / 26f, real, 5);
        }
        Assert.Equal(resamples, RetrievalTraining.BootstrapWeights(weights, 50, 7));
        Assert.NotEqual(resamples, RetrievalTraining.BootstrapWeights(weights, 50, 8));
    }
}
