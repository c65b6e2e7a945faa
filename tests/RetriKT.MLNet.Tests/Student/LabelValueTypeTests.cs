using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// A bool or number label keyed by MapValueToKey has key values of its own type, and ML.NET's trainers give PredictedLabel
/// the same key values, so <c>MapKeyToValue("PredictedLabel")</c> gives the label's type back. The student gave its label
/// names as text: the mapped PredictedLabel was the String "True", and a PredictionEngine whose class holds
/// <c>bool PredictedLabel</c> (the type of its Label) failed to bind.
/// </summary>
public class LabelValueTypeTests
{
    private sealed class BoolRow
    {
        public string Text { get; set; } = "";
        public bool Label { get; set; }
    }

    private sealed class BoolPrediction
    {
        public bool PredictedLabel { get; set; }
    }

    private sealed class FloatRow
    {
        public string Text { get; set; } = "";
        public float Label { get; set; }
    }

    private sealed class FloatPrediction
    {
        public float PredictedLabel { get; set; }
    }

    private static RetrievalClassifierTrainer.Options Tiny() => new() { HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 15, BatchSize = 8, LearningRate = 5e-3 };

    private static ITransformer Fit(MLContext ml, IDataView data)
        => ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.RetrievalClassifier(Tiny()))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(data);

    [Fact]
    public void ABoolLabelIsPredictedAsABool_BeforeAndAfterSaveAndLoad()
    {
        var ml = new MLContext(seed: 1);
        var rows = RetrievalClassifierBehaviourTests.Synthetic(40, 1).Select(r => new BoolRow { Text = r.Text, Label = r.Label == "pos" }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        var model = Fit(ml, data);
        Assert.Equal(BooleanDataViewType.Instance, model.Transform(data).Schema["PredictedLabel"].Type);

        using var saved = new MemoryStream();
        ml.Model.Save(model, data.Schema, saved);
        saved.Position = 0;
        var loaded = new MLContext(seed: 2).Model.Load(saved, out _);
        Assert.Equal(BooleanDataViewType.Instance, loaded.GetOutputSchema(data.Schema)["PredictedLabel"].Type);
        foreach (var m in new[] { model, loaded })
        {
            var engine = ml.Model.CreatePredictionEngine<BoolRow, BoolPrediction>(m);
            Assert.True(engine.Predict(new BoolRow { Text = "a wonderful and charming film" }).PredictedLabel);
            Assert.False(engine.Predict(new BoolRow { Text = "an awful and boring film" }).PredictedLabel);
        }
    }

    [Fact]
    public void AFloatLabelIsPredictedAsAFloat()
    {
        var ml = new MLContext(seed: 1);
        var rows = RetrievalClassifierBehaviourTests.Synthetic(40, 1).Select(r => new FloatRow { Text = r.Text, Label = r.Label == "pos" ? 1 : 0 }).ToList();
        var model = Fit(ml, ml.Data.LoadFromEnumerable(rows));
        var engine = ml.Model.CreatePredictionEngine<FloatRow, FloatPrediction>(model);
        Assert.Equal(1f, engine.Predict(new FloatRow { Text = "a wonderful and charming film" }).PredictedLabel);
        Assert.Equal(0f, engine.Predict(new FloatRow { Text = "an awful and boring film" }).PredictedLabel);
    }
}
