using System.Text.RegularExpressions;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// <see cref="RetrievalClassifierTrainer.Options.StoreValidationShare"/>: a store student given no validation set holds
/// out part of its store and chooses its epoch and mix on it. The store is 480 real SST-2 training sentences soft-labelled
/// by the shipped stand-in teacher (so some held-out rows validate as a label other than their gold one).
/// </summary>
public class StoreValidationShareTests
{
    private static RetrievalClassifierTrainer.Options Tiny() => new()
    {
        HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 32, Epochs = 12, BatchSize = 16, LearningRate = 1e-2, LexicalNeighborCount = 16,
        EarlyStoppingPatience = 1, EarlyStoppingMinPatienceSteps = 0, Seed = 3,
    };

    [SharedDataFact]
    public void TheTrainerHoldsOutWhatThePipelineWouldAndTunesOnIt()
    {
        var ml = new MLContext(seed: 1);
        var logs = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info) lock (logs) logs.Add(e.RawMessage); };
        var store = ShippedTeachers.Sst2TeacherLabelledStore(480);
        var train = TestData.Sst2Train(ml, 13);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var test = keyMap.Transform(ml.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(200)));

        var own = Tiny();
        (own.StoreData, own.StoreValidationShare) = (store.ToDataView(ml), 0.25);
        using var heldOutByTrainer = ml.MulticlassClassification.Trainers.RetrievalClassifier(own).Fit(keyMap.Transform(train));
        var ownLog = logs.ToList();
        Assert.Contains(ownLog, l => l.Contains("Validation: 120 of the store's 512 entries held out (StoreValidationShare 0.25)", StringComparison.Ordinal));
        Assert.Contains(ownLog, l => Regex.IsMatch(l, @"^Tuned on 120 validation rows"));
        Assert.Contains(ownLog, l => l.Contains("Kept the weights of epoch", StringComparison.Ordinal));

        // The same split made by hand (the pipeline's hold-out, same seed) and given as store and validation set: the same model.
        var (kept, heldOut) = RetriKTPipeline.HoldOut(store, 0.25, seed: 3);
        var given = Tiny();
        (given.StoreData, given.ValidationSet) = (kept.ToDataView(ml), keyMap.Transform(ml.Data.LoadFromEnumerable(heldOut)));
        logs.Clear();
        using var heldOutByHand = ml.MulticlassClassification.Trainers.RetrievalClassifier(given).Fit(keyMap.Transform(train));
        Assert.Equal(ownLog.Where(IsTraining), logs.Where(IsTraining));
        var expected = heldOutByHand.Transform(test).GetColumn<float[]>("Score").ToList();
        var actual = heldOutByTrainer.Transform(test).GetColumn<float[]>("Score").ToList();
        for (int i = 0; i < expected.Count; i++) Assert.Equal(expected[i], actual[i]);
        Assert.Equal(392, heldOutByTrainer.Store.Count); // 360 kept + 32 gold training rows
    }

    /// <summary>A log line of the epoch choice or the mix tuning.</summary>
    private static bool IsTraining(string line) => Regex.IsMatch(line, @"^(Epoch \d+: validation NLL|Kept the weights|Tuned on)");

    [SharedDataFact]
    public void ByDefaultAGeneratedStoreHoldsOutATenthAndStopsEarly_TrainingRowsAloneAreNotSplit()
    {
        var ml = new MLContext(seed: 1);
        var logs = new List<string>();
        ml.Log += (_, e) => { if (e.Kind is Microsoft.ML.Runtime.ChannelMessageKind.Info or Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (logs) logs.Add(e.RawMessage); };
        var store = ShippedTeachers.Sst2TeacherLabelledStore(480).ToDataView(ml);
        var train = TestData.Sst2Train(ml, 13);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var test = keyMap.Transform(ml.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(100)));

        // The simple overload: the Options defaults, a tenth of the generated entries held out, a 48-wide student.
        using (var simple = ml.MulticlassClassification.Trainers.RetrievalClassifier(store: store, epochs: 2).Fit(keyMap.Transform(train)))
        {
            Assert.Contains(logs, l => l.Contains("Validation: 48 of the store's 512 entries held out (StoreValidationShare 0.1, the default without a ValidationSet)", StringComparison.Ordinal));
            Assert.Contains(logs, l => Regex.IsMatch(l, @"^Tuned on 48 validation rows"));
            Assert.Equal((48, 2, 4, 96), simple.Shape);
            Assert.Equal(464, simple.Store.Count); // 432 kept + 32 gold training rows
        }

        // Unset share and patience are exactly 0.1 and 3.
        RetrievalClassifierTrainer.Options Shape() => new() { StoreData = store, HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 32, Epochs = 8, LexicalNeighborCount = 16, Seed = 3 };
        var explicitly = Shape();
        (explicitly.StoreValidationShare, explicitly.EarlyStoppingPatience) = (0.1, 3);
        logs.Clear();
        using var byDefault = ml.MulticlassClassification.Trainers.RetrievalClassifier(Shape()).Fit(keyMap.Transform(train));
        var defaultLog = logs.Where(IsTraining).ToList();
        Assert.Contains(defaultLog, l => l.StartsWith("Kept the weights of epoch", StringComparison.Ordinal));
        logs.Clear();
        using var byHand = ml.MulticlassClassification.Trainers.RetrievalClassifier(explicitly).Fit(keyMap.Transform(train));
        Assert.Equal(defaultLog, logs.Where(IsTraining));
        Assert.Equal(byHand.Transform(test).GetColumn<float[]>("Score").ToList(), byDefault.Transform(test).GetColumn<float[]>("Score").ToList());

        // No store: every entry is a training row, so by default nothing is held out, nothing is warned about, and no
        // epoch is chosen (λ stays untuned), as before the defaults.
        var fewShotOnly = Shape();
        fewShotOnly.StoreData = null;
        logs.Clear();
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(fewShotOnly).Fit(keyMap.Transform(train));
        Assert.Equal(32, student.Store.Count);
        Assert.DoesNotContain(logs, l => l.Contains("Validation:", StringComparison.Ordinal) || l.Contains("StoreValidationShare", StringComparison.Ordinal) || IsTraining(l));
        Assert.Equal(0.5, student.RetrievalWeight);
    }

    [SharedDataFact]
    public void AShareWithNothingToHoldOutOrBesideAValidationSetSaysSo()
    {
        var ml = new MLContext(seed: 1);
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.RawMessage); };
        var trainers = ml.MulticlassClassification.Trainers;
        var train = TestData.Sst2Train(ml, 13);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(train);

        var both = Assert.Throws<ArgumentOutOfRangeException>(() => trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options { StoreValidationShare = 0.1, ValidationSet = keyed }));
        Assert.Contains("StoreValidationShare is 0.1 and a ValidationSet is given; set one of them, not both.", both.Message);
        var whole = Assert.Throws<ArgumentOutOfRangeException>(() => trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options { StoreValidationShare = 1 }));
        Assert.Contains("StoreValidationShare must be in [0, 1), found 1.", whole.Message);

        // No store: every entry is a training row, none generated, so there is nothing to hold out; the share that was
        // asked for says so, and the patience it would bring by default has no rows to read, so none is used.
        var noStore = Tiny();
        (noStore.StoreValidationShare, noStore.EarlyStoppingPatience) = (0.2, null);
        using var student = trainers.RetrievalClassifier(noStore).Fit(keyed);
        Assert.Contains(warnings, w => w.StartsWith("StoreValidationShare is 0.2, but the store has no generated entries to hold out (32 entries, all training rows)", StringComparison.Ordinal));
        Assert.Equal(32, student.Store.Count);
    }

    /// <summary>
    /// A given store too small for the default share to hold any entry out (a tenth of 4 generated entries rounds to none):
    /// λ stayed at its untuned 0.5 and nothing said why; one line now says no validation rows were held out and why.
    /// </summary>
    [SharedDataFact]
    public void AStoreTooSmallToHoldAnyEntryOutSaysSo()
    {
        var ml = new MLContext(seed: 1);
        var logs = new List<string>();
        ml.Log += (_, e) => { if (e.Kind is Microsoft.ML.Runtime.ChannelMessageKind.Info or Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (logs) logs.Add(e.RawMessage); };
        var store = ShippedTeachers.Sst2TeacherLabelledStore(4).ToDataView(ml);
        var train = TestData.Sst2Train(ml, 13);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);

        var small = Tiny();
        (small.StoreData, small.EarlyStoppingPatience) = (store, null);
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(small).Fit(keyMap.Transform(train));
        Assert.Equal(0.5, student.RetrievalWeight);
        Assert.Single(logs, l => l.StartsWith("StoreValidationShare is 0.1 (the default without a ValidationSet), but the store is too small to hold any entry out " +
            "(0.1 of its 4 generated entries, less any whose text it holds again or a training row has, rounds to none): no validation rows are held out, so λ and μ are not tuned",
            StringComparison.Ordinal));
    }

    /// <summary>
    /// A share that holds out the whole store (no training rows, 0.9 of 4 entries rounds to 4) failed with "the store holds 0",
    /// naming neither the share nor the hold-out; it now names StoreValidationShare and what it held out.
    /// </summary>
    [SharedDataFact]
    public void AHoldOutOfTheWholeStoreNamesTheShare()
    {
        var ml = new MLContext(seed: 1);
        var store = ShippedTeachers.Sst2TeacherLabelledStore(4).ToDataView(ml);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(TestData.Sst2Train(ml, 13));
        var whole = Tiny();
        (whole.StoreData, whole.StoreValidationShare) = (store, 0.9);
        var noTrainingRows = keyMap.Transform(ml.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "train.tsv")).Take(0)));
        var e = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(whole).Fit(noTrainingRows));
        Assert.StartsWith("StoreValidationShare 0.9 held out 4 of the store's 4 entries as validation rows, leaving 0 to train on; training needs at least 2.", e.Message);
    }
}
