using Microsoft.ML;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// <see cref="RetrievalClassifierTrainer.TuneMix"/> reads its rows with the trainer's columns. A trainer built only to tune
/// (in another process, after loading the model) that does not read the student's kind of input chose the mix on rows the
/// student never saw: a pair student's rows without their second text, or a one-text student's as pairs, without a word.
/// </summary>
public class TuneMixColumnsTests
{
    private sealed class PairRow
    {
        public string Text { get; set; } = "";
        public string Text2 { get; set; } = "";
        public string Label { get; set; } = "";
    }

    private static RetrievalClassifierTrainer.Options Tiny(string? text2) => new()
    {
        HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 24, Epochs = 3, BatchSize = 8, SecondTextColumnName = text2,
    };

    private static List<PairRow> Pairs(int count, int seed) => RetrievalClassifierBehaviourTests.Synthetic(count, seed)
        .Select((r, i) => new PairRow { Text = RetrievalClassifierBehaviourTests.Synthetic(1, seed * 1000 + i)[0].Text, Text2 = r.Text, Label = r.Label }).ToList();

    [Fact]
    public void ATrainerThatReadsAnotherKindOfInputThanTheStudentIsRefused()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Pairs(24, 10));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        var tuning = keyMap.Transform(ml.Data.LoadFromEnumerable(Pairs(16, 11)));
        using var pairStudent = ml.MulticlassClassification.Trainers.RetrievalClassifier(Tiny("Text2")).Fit(keyMap.Transform(data));
        using var oneTextStudent = ml.MulticlassClassification.Trainers.RetrievalClassifier(Tiny(null)).Fit(keyMap.Transform(data));

        var oneTextTrainer = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options());
        var e = Assert.Throws<ArgumentException>(() => oneTextTrainer.TuneMix(pairStudent, tuning));
        Assert.Equal("TuneMix: the student reads sentence pairs (columns 'Text' and 'Text2'), but these options' SecondTextColumnName is not set: " +
                     "the rows would be read without their second text. Set SecondTextColumnName to the pairs' second column. (Parameter 'student')", e.Message);
        var pairTrainer = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options { SecondTextColumnName = "Text2" });
        e = Assert.Throws<ArgumentException>(() => pairTrainer.TuneMix(oneTextStudent, tuning));
        Assert.Equal("TuneMix: the student reads one text (column 'Text'), but these options' SecondTextColumnName is 'Text2': the rows would be " +
                     "read as sentence pairs it never saw. Leave SecondTextColumnName unset. (Parameter 'student')", e.Message);

        // The matching trainers tune.
        using var pairTuned = pairTrainer.TuneMix(pairStudent, tuning);
        using var oneTextTuned = oneTextTrainer.TuneMix(oneTextStudent, tuning);
    }
}
