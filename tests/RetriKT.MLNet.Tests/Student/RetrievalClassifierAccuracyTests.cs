using Microsoft.ML;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// The protocol of issue 6: train on SST-2 16-shot seed 13 (32 rows) with a store of those rows and their gold labels,
/// tune λ/τ on the 16-shot dev split, evaluate on the official SST-2 dev set (872 rows).
/// </summary>
public class RetrievalClassifierAccuracyTests(Sst2StudentFixture fixture, ITestOutputHelper output) : IClassFixture<Sst2StudentFixture>
{
    private const double MajorityAccuracy = 444.0 / 872; // SST-2 dev: 444 positive of 872

    [SharedDataFact]
    public void BeatsMajorityOnOfficialSst2DevAndRetrievalMakesAMeasurableDifference()
    {
        var ml = fixture.MlContext;
        var dev = fixture.OfficialDev();
        var metrics = ml.MulticlassClassification.Evaluate(fixture.Model.Transform(dev));
        var student = fixture.Student;
        output.WriteLine($"student: {student.ParameterCount:N0} parameters ({student.EmbeddingParameterCount:N0} embeddings, vocabulary {student.Vocabulary.Count}), " +
                         $"{student.TeacherParameterRatio:P3} of a 1.3 B teacher; λ={student.RetrievalWeight:G3}, τ={student.Temperature:G3}; " +
                         $"dev accuracy {metrics.MicroAccuracy:P2}, log-loss {metrics.LogLoss:G4}");
        Assert.Equal(872, metrics.ConfusionMatrix.Counts.Sum(r => r.Sum()));
        Assert.True(metrics.MicroAccuracy > MajorityAccuracy + 0.02, $"accuracy {metrics.MicroAccuracy:P2} does not beat the majority class {MajorityAccuracy:P2} by 2 points");
        Assert.True(student.TeacherParameterRatio < 0.01);

        // Same weights, prediction from the head alone (λ = 0) versus from retrieval alone (λ = 1).
        var keyed = fixture.KeyMap.Transform(dev);
        using var headOnly = student.WithRetrievalWeight(0);
        using var knnOnly = student.WithRetrievalWeight(1);
        var head = ml.MulticlassClassification.Evaluate(headOnly.Transform(keyed));
        var knn = ml.MulticlassClassification.Evaluate(knnOnly.Transform(keyed));
        output.WriteLine($"λ=0 (head): accuracy {head.MicroAccuracy:P2}, log-loss {head.LogLoss:G4}; λ=1 (retrieval): accuracy {knn.MicroAccuracy:P2}, log-loss {knn.LogLoss:G4}");
        Assert.True(Math.Abs(head.LogLoss - knn.LogLoss) > 1e-2, "head-only and retrieval-only predictions have the same log-loss");

        // Trained without retrieval (no retrieval loss, λ = 0): a different encoder and different predictions.
        var options = Sst2StudentFixture.DefaultOptions(fixture.KeyMap.Transform(fixture.FewShotDev()));
        options.UseRetrieval = false;
        using var plain = ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(fixture.KeyMap.Transform(fixture.Train16()));
        var plainMetrics = ml.MulticlassClassification.Evaluate(plain.Transform(keyed));
        output.WriteLine($"trained without retrieval: accuracy {plainMetrics.MicroAccuracy:P2}, log-loss {plainMetrics.LogLoss:G4}");
        Assert.Equal(0, plain.RetrievalWeight);
        Assert.True(Math.Abs(plainMetrics.LogLoss - metrics.LogLoss) > 1e-3 || plainMetrics.MicroAccuracy != metrics.MicroAccuracy,
            "training without retrieval gave the same dev metrics");
    }
}
