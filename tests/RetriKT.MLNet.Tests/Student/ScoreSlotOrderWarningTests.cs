using Microsoft.ML;
using Microsoft.ML.Runtime;
using Microsoft.ML.Transforms;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// ML.NET's evaluator reads Score slot i as key i + 1 of the Label column and never compares the key's names with the
/// slots'. A student trained on String labels scores in sorted order, and a MapValueToKey fitted afterwards numbers the
/// labels by first occurrence: on SST-2's seed-21 split (first row "1") the evaluator read a 56.2 % student as 43.8 %,
/// and nothing said so. Both the trainer and Transform now warn with both orders.
/// </summary>
public class ScoreSlotOrderWarningTests
{
    private static RetrievalClassifierTrainer.Options Tiny() => new() { HiddenSize = 8, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 1 };

    private static List<string> Warnings(MLContext ml)
    {
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.RawMessage); };
        return warnings;
    }

    [Fact]
    public void StringLabelsWhoseFirstOccurrenceOrderIsNotTheSlotOrder_AreWarnedAboutWithBothOrders()
    {
        var ml = new MLContext(seed: 1);
        var warnings = Warnings(ml);
        var rows = RetrievalClassifierBehaviourTests.Synthetic(20, 1); // the first row is "pos": keys by occurrence are [pos, neg]
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(Tiny()).Fit(ml.Data.LoadFromEnumerable(rows));
        Assert.Equal(["neg", "pos"], student.LabelNames);
        Assert.Contains(warnings, w => w.StartsWith("Label column 'Label' is String: Score slot i is label i of [neg, pos], but MapValueToKey(\"Label\") " +
                                                    "fitted on these rows numbers them [pos, neg]", StringComparison.Ordinal));

        // Rows whose first label is the first slot's: nothing to warn about.
        var warned = warnings.Count;
        using var sorted = ml.MulticlassClassification.Trainers.RetrievalClassifier(Tiny()).Fit(ml.Data.LoadFromEnumerable(rows.Skip(1).ToList()));
        Assert.DoesNotContain(warnings.Skip(warned), w => w.StartsWith("Label column", StringComparison.Ordinal));
    }

    [Fact]
    public void TransformWarnsWhenAnInputKeyColumnHoldsTheLabelsInAnotherOrderThanTheScoreSlots()
    {
        var ml = new MLContext(seed: 1);
        var warnings = Warnings(ml);
        var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(20, 1));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data); // [pos, neg]
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(Tiny()).Fit(keyMap.Transform(data));
        Assert.Equal(["pos", "neg"], student.LabelNames);

        int before = warnings.Count;
        student.Transform(keyMap.Transform(data));
        Assert.DoesNotContain(warnings.Skip(before), w => w.Contains("Score slot", StringComparison.Ordinal));

        // Keys made again for the test rows, in another order: the evaluator would read swapped labels.
        var byValue = ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue).Fit(data);
        student.Transform(byValue.Transform(data));
        Assert.Contains(warnings.Skip(before), w => w == "Input column 'Label' is a key of the model's labels in the order [neg, pos], but Score slot i is " +
            "label i of [pos, neg] (PredictedLabel's keys too); ML.NET's evaluator reads slot i as key i + 1 and would score swapped labels. " +
            "Make the keys with the model's order (the MapValueToKey fitted for training).");
    }

    /// <summary>
    /// Test rows that are a slice of one label, keyed by a MapValueToKey fitted on them, have the keys [neg] where the
    /// Score slots are [pos, neg]: the evaluator read a student right on every row as 0 % accurate, and only keys of the
    /// same labels in another order were warned about.
    /// </summary>
    [Fact]
    public void TransformWarnsWhenAnInputKeyColumnNamesOtherLabelsThanTheScoreSlots()
    {
        var ml = new MLContext(seed: 1);
        var warnings = Warnings(ml);
        var rows = RetrievalClassifierBehaviourTests.Synthetic(40, 1);
        var data = ml.Data.LoadFromEnumerable(rows);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data); // [pos, neg]
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 15, BatchSize = 8, LearningRate = 5e-3,
        }).Fit(keyMap.Transform(data));
        Assert.Equal(["pos", "neg"], student.LabelNames);

        var negatives = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(40, 2).Where(r => r.Label == "neg").ToList());
        var modelKeys = ml.MulticlassClassification.Evaluate(student.Transform(keyMap.Transform(negatives))).MicroAccuracy;
        Assert.True(modelKeys >= 0.9, $"accuracy {modelKeys:P1} with the model's keys");
        int before = warnings.Count;
        var sliceKeys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(negatives).Transform(negatives); // [neg]
        var misread = ml.MulticlassClassification.Evaluate(student.Transform(sliceKeys)).MicroAccuracy;
        Assert.Equal(1 - modelKeys, misread, 6);
        Assert.Contains(warnings.Skip(before), w => w == "Input column 'Label' is a key of the labels [neg], but Score slot i is label i of [pos, neg] " +
            "(PredictedLabel's keys too); ML.NET's evaluator reads slot i as key i + 1 and would score label 'pos' as 'neg'. " +
            "Make the keys with the model's labels (the MapValueToKey fitted for training).");

        // Keys that agree with the slots as far as both go are read right (a slice of the first label), and a key
        // column naming none of the model's labels is not a label column: neither is warned about.
        var positives = ml.Data.LoadFromEnumerable(rows.Where(r => r.Label == "pos").ToList());
        var words = ml.Transforms.Conversion.MapValueToKey("Word", "Text").Fit(data);
        before = warnings.Count;
        student.Transform(ml.Transforms.Conversion.MapValueToKey("Label").Fit(positives).Transform(positives));
        student.Transform(words.Transform(keyMap.Transform(data)));
        Assert.DoesNotContain(warnings.Skip(before), w => w.Contains("Score slot", StringComparison.Ordinal));
    }

    private sealed class IntRow
    {
        public string Text { get; set; } = "";
        public int Label { get; set; }
    }

    /// <summary>
    /// A number label keyed by MapValueToKey has key values of its own type. Only keys with text values were compared with
    /// the slots, so an int label keyed again for the test rows in another order ([0, 1] where the slots are [1, 0]) was
    /// read by the evaluator as swapped labels, a student right on every row scoring 0 %, without a warning.
    /// </summary>
    [Fact]
    public void ANumberLabelKeyedAgainInAnotherOrderIsWarnedAboutAsATextOneIs()
    {
        var ml = new MLContext(seed: 1);
        var warnings = Warnings(ml);
        IDataView Rows(int seed) => ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(40, seed)
            .Select(r => new IntRow { Text = r.Text, Label = r.Label == "pos" ? 1 : 0 }).ToList());
        var data = Rows(1);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data); // [1, 0]: the first row is positive
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 15, BatchSize = 8, LearningRate = 5e-3,
        }).Fit(keyMap.Transform(data));
        Assert.Equal(["1", "0"], student.LabelNames);

        var test = Rows(2);
        int before = warnings.Count;
        var right = ml.MulticlassClassification.Evaluate(student.Transform(keyMap.Transform(test))).MicroAccuracy;
        Assert.True(right >= 0.9, $"accuracy {right:P1} with the model's keys");
        Assert.DoesNotContain(warnings.Skip(before), w => w.Contains("Score slot", StringComparison.Ordinal));

        var byValue = ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue).Fit(test);
        var swapped = ml.MulticlassClassification.Evaluate(student.Transform(byValue.Transform(test))).MicroAccuracy;
        Assert.Equal(1 - right, swapped, 6);
        Assert.Contains(warnings.Skip(before), w => w == "Input column 'Label' is a key of the model's labels in the order [0, 1], but Score slot i is " +
            "label i of [1, 0] (PredictedLabel's keys too); ML.NET's evaluator reads slot i as key i + 1 and would score swapped labels. " +
            "Make the keys with the model's order (the MapValueToKey fitted for training).");
    }
}
