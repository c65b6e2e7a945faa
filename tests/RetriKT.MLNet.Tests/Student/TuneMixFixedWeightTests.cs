using Microsoft.ML;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// <see cref="RetrievalClassifierTrainer.TuneMix"/> with a fixed term-match weight μ for a student without a term index:
/// Fit refuses such options, TuneMix searched a grid of μ = 0 alone and returned a mix without the μ it was told to keep.
/// </summary>
public class TuneMixFixedWeightTests
{
    [Fact]
    public void AFixedTermMatchWeightForAStudentWithoutATermIndexIsRefused()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(40, 1));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        // 40 entries are too few for term matching over 128 neighbours: the student has no term index.
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 3, BatchSize = 8,
        }).Fit(keyMap.Transform(data));
        Assert.Equal(0, student.LexicalNeighborCount);
        var tuning = keyMap.Transform(ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(20, 2)));
        var fixedMu = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options { RetrievalWeight = 0.2, LexicalRetrievalWeight = 0.5 });
        var e = Assert.Throws<ArgumentException>(() => fixedMu.TuneMix(student, tuning));
        Assert.Equal("TuneMix: LexicalRetrievalWeight is 0.5, but the student has no term-match index (its store was too small for one, or grew " +
                     "without one); leave LexicalRetrievalWeight unset. (Parameter 'student')", e.Message);
        // μ = 0 fixed, or unset, tunes.
        using var zero = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options { LexicalRetrievalWeight = 0 }).TuneMix(student, tuning);
        Assert.Equal(0, zero.LexicalRetrievalWeight);
    }
}
