using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;

namespace RetriKT.MLNet.Tests.Student;

public class RetrievalClassifierAccuracyTests(Sst2StudentFixture fixture, ITestOutputHelper output) : IClassFixture<Sst2StudentFixture>
{
    private const double MajorityAccuracy = 444.0 / 872; // SST-2 dev: 444 positive of 872

    [SharedDataFact]
    public void BeatsMajorityOnOfficialSst2DevAndRetrievalMatters()
    {
        var ml = fixture.MlContext;
        var dev = fixture.OfficialDev();
        var metrics = ml.MulticlassClassification.Evaluate(fixture.Model.Transform(dev));
        output.WriteLine($"student: {fixture.Student.ParameterCount:N0} params, λ={fixture.Student.RetrievalWeight:G3}, τ={fixture.Student.Temperature:G3}, " +
                         $"dev accuracy {metrics.MicroAccuracy:P2}, log-loss {metrics.LogLoss:G4}");
        Assert.Equal(872, metrics.ConfusionMatrix.Counts.Sum(r => r.Sum()));
        Assert.True(metrics.MicroAccuracy > MajorityAccuracy + 0.01, $"accuracy {metrics.MicroAccuracy:P2} does not beat the majority class {MajorityAccuracy:P2}");

        // Same weights, retrieval switched off at prediction (λ = 0): scores must differ measurably.
        using var headOnly = fixture.Student.WithRetrievalWeight(0);
        var keyed = fixture.KeyMap.Transform(dev);
        var headMetrics = ml.MulticlassClassification.Evaluate(headOnly.Transform(keyed));
        output.WriteLine($"head only (λ=0): accuracy {headMetrics.MicroAccuracy:P2}, log-loss {headMetrics.LogLoss:G4}");
        Assert.True(Math.Abs(headMetrics.LogLoss - metrics.LogLoss) > 1e-3, "λ = 0 gave the same log-loss: retrieval had no effect");
    }
}
