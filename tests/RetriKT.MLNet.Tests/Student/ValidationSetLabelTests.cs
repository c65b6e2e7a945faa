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
