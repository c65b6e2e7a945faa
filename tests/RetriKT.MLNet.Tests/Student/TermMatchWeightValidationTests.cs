using Microsoft.ML;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// μ (the term-match weight) is never cut behind the user's back: with λ untuned (0.5) a fixed μ above 0.5 is an
/// options error that says what to set; a λ and μ that sum to at most 1 are used as given.
/// </summary>
public class TermMatchWeightValidationTests
{
    private static RetrievalClassifierTrainer.Options Tiny() => new()
    {
        HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 2, BatchSize = 8, LexicalNeighborCount = 8,
    };

    [Fact]
    public void AFixedTermMatchWeightAboveWhatAnUntunedRetrievalWeightLeavesFailsWithOneMessage()
    {
        var ml = new MLContext(seed: 1);
        var options = Tiny();
        options.LexicalRetrievalWeight = 0.8;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(options));
        Assert.Contains("LexicalRetrievalWeight is 0.8 with RetrievalWeight unset and no ValidationSet", e.Message);
        Assert.Contains("set RetrievalWeight <= 0.2, LexicalRetrievalWeight <= 0.5, or give a ValidationSet", e.Message);

        // Each way out the message names is accepted: a λ that leaves room, a μ within what λ = 0.5 leaves, or a
        // validation set to tune λ under 1 − μ.
        var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(8, 2));
        var withLambda = Tiny(); withLambda.LexicalRetrievalWeight = 0.8; withLambda.RetrievalWeight = 0.2;
        var withinHalf = Tiny(); withinHalf.LexicalRetrievalWeight = 0.5;
        var tuned = Tiny(); tuned.LexicalRetrievalWeight = 0.8; tuned.ValidationSet = data;
        foreach (var ok in new[] { withLambda, withinHalf, tuned })
            Assert.NotNull(ml.MulticlassClassification.Trainers.RetrievalClassifier(ok));
    }

    [Fact]
    public void AFixedRetrievalAndTermMatchWeightThatSumToOneAreUsedAsGiven()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(40, 1));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        var options = Tiny();
        options.RetrievalWeight = 0.2;
        options.LexicalRetrievalWeight = 0.8;
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(keyMap.Transform(data));
        Assert.Equal(8, student.LexicalNeighborCount); // 40 rows ≥ 4 × 8: term matching is on
        Assert.Equal(0.2, student.RetrievalWeight, 12);
        Assert.Equal(0.8, student.LexicalRetrievalWeight, 12);
    }
}
