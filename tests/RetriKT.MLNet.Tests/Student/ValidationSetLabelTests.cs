using Microsoft.ML;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>A validation set's labels are the store's, or the fit fails naming the label: λ, μ and τ are never left untuned in silence.</summary>
public class ValidationSetLabelTests
{
    [Fact]
    public void AValidationSetWhoseLabelsTheStoreLacks_FailsNamingTheLabelInsteadOfLeavingTheMixUntuned()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(24, 1));
        // The dev file spells the labels out: none is the store's. Fit used to warn in the log, ignore every row and keep λ = 0.5.
        var dev = RetrievalClassifierBehaviourTests.Synthetic(12, 2).Select(r => new TextRow { Text = r.Text, Label = r.Label == "pos" ? "positive" : "negative" }).ToList();
        var options = new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 3, BatchSize = 8, LearningRate = 5e-3,
            ValidationSet = ml.Data.LoadFromEnumerable(dev),
        };
        var error = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(train));
        Assert.Equal($"Validation set: label 'positive' (usable row 1, '{dev[0].Text}'; 12 of 12 rows) is not one of the store's labels [neg, pos].", error.Message);

        // TuneMix reads its validation rows the same way.
        options.ValidationSet = null;
        var trainer = ml.MulticlassClassification.Trainers.RetrievalClassifier(options);
        using var student = trainer.Fit(train);
        Assert.Contains("is not one of the store's labels [neg, pos]", Assert.Throws<ArgumentException>(() => trainer.TuneMix(student, ml.Data.LoadFromEnumerable(dev))).Message);
    }

    /// <summary>
    /// Validation rows that are store entries: the student trained on them and retrieves each at cosine 1 with its own
    /// label. The training rows given as the validation set tuned λ to 1 at a validation NLL of 0 and 100 % accuracy, and
    /// nothing said so; such rows are left out now (warned), and a validation set of nothing else fails, in Fit as in TuneMix.
    /// </summary>
    [Fact]
    public void ValidationRowsTheStoreHolds_AreLeftOutAndAValidationSetOfNothingElseFails()
    {
        var ml = new MLContext(seed: 1);
        var logs = new List<string>();
        ml.Log += (_, e) => { if (e.Kind is Microsoft.ML.Runtime.ChannelMessageKind.Info or Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (logs) logs.Add(e.RawMessage); };
        var rows = RetrievalClassifierBehaviourTests.Synthetic(24, 1);
        var train = ml.Data.LoadFromEnumerable(rows);
        var options = new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 3, BatchSize = 8, LearningRate = 5e-3, ValidationSet = train,
        };
        var error = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(train));
        Assert.Equal($"Validation set: 24 of 24 rows are store entries, which the student trained on and retrieves at cosine 1 (the first: usable row 1, " +
                     $"'{rows[0].Text}'); no row is left to choose the mix and the epoch on. Give rows the student has not seen (not its training rows).", error.Message);

        // Three training rows among twelve new ones: the mix is chosen on the twelve.
        options.ValidationSet = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(12, 2).Concat(rows.Take(3)));
        var trainer = ml.MulticlassClassification.Trainers.RetrievalClassifier(options);
        using var student = trainer.Fit(train);
        Assert.Contains(logs, l => l.StartsWith($"Validation set: 3 of 15 rows are store entries, which the student trained on and retrieves at cosine 1 (the first: usable row 13, " +
                                                $"'{rows[0].Text}'); they are left out of the validation rows.", StringComparison.Ordinal));
        Assert.Contains(logs, l => l.StartsWith("Tuned on 12 validation rows", StringComparison.Ordinal));
        Assert.StartsWith("Validation set: 24 of 24 rows are store entries", Assert.Throws<ArgumentException>(() => trainer.TuneMix(student, train)).Message);
    }

    /// <summary>
    /// A keyed validation set whose labels the training keys do not know (the dev file spells them out) reads as rows
    /// with a missing label (key 0), all skipped. Fit used to warn, keep the untuned λ of 0.5 and return a model as if
    /// tuned; it fails now, as a validation set with such String labels does.
    /// </summary>
    [Fact]
    public void AKeyedValidationSetWithNoUsableRow_FailsInsteadOfLeavingTheMixUntuned()
    {
        var ml = new MLContext(seed: 1);
        var rows = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(24, 1));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(rows);
        var dev = RetrievalClassifierBehaviourTests.Synthetic(12, 2).Select(r => new TextRow { Text = r.Text, Label = r.Label == "pos" ? "positive" : "negative" });
        var options = new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 3, BatchSize = 8, LearningRate = 5e-3,
            ValidationSet = keyMap.Transform(ml.Data.LoadFromEnumerable(dev)),
        };
        var error = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(keyMap.Transform(rows)));
        Assert.Equal("Validation set: no usable row (rows with a missing label or an empty text are skipped, as the log says); nothing to choose " +
                     "λ, μ and τ on. Give rows whose labels the training Label column's keys know.", error.Message);
    }

    private sealed class TextOnly
    {
        public string Text { get; set; } = "";
    }

    [Fact]
    public void AColumnMissingFromTheValidationSetIsNamedAsTheValidationSets()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(24, 1));
        var options = new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 1, BatchSize = 8,
            ValidationSet = ml.Data.LoadFromEnumerable(new[] { new TextOnly { Text = "a good film" } }),
        };
        var error = Assert.ThrowsAny<ArgumentException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(train));
        Assert.StartsWith("Validation set: Label column 'Label' not found", error.Message);
    }
}
