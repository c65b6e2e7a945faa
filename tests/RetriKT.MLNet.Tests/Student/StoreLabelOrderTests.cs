using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// The README's way of making keys, <c>MapValueToKey("Label").Fit(fewShot)</c>, numbers labels in the order the rows
/// first show them. SST-2's seed-21 split starts with a "1", so its keys are [1, 0] while the extractor's store is
/// [0, 1]. ML.NET's evaluator reads Score slot i as key i + 1, so a student scoring in store order was evaluated
/// against swapped labels (70 % read as 30 %). The student now scores in key order.
/// </summary>
public class StoreLabelOrderTests
{
    [SharedDataFact]
    public void AStoreInAnotherOrderThanTheKeysIsScoredInKeyOrder()
    {
        var ml = new MLContext(seed: 1);
        var logs = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info) lock (logs) logs.Add(e.RawMessage); };
        var store = ShippedTeachers.Sst2TeacherLabelledStore(480);
        var train = TestData.Sst2Train(ml, 21);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var keyNames = default(VBuffer<ReadOnlyMemory<char>>);
        keyMap.GetOutputSchema(train.Schema)["Label"].GetKeyValues(ref keyNames);
        Assert.Equal(["1", "0"], keyNames.DenseValues().Select(v => v.ToString())); // the premise: keys in another order than the store's

        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            StoreData = store.ToDataView(ml), HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 32, Epochs = 4, LexicalNeighborCount = 16, Seed = 3,
        }).Fit(keyMap.Transform(train));
        Assert.Contains(logs, l => l == "Knowledge store labels [0, 1] put in the order of the training Label column's keys [1, 0], so Score slot i is key i + 1.");
        Assert.Equal(["1", "0"], student.Store.LabelNames);

        // What the evaluator reports is what the predictions say, read by label name.
        var gold = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(300).ToList();
        var scored = student.Transform(keyMap.Transform(ml.Data.LoadFromEnumerable(gold)));
        var predicted = ml.Transforms.Conversion.MapKeyToValue("PredictedName", "PredictedLabel").Fit(scored).Transform(scored)
            .GetColumn<ReadOnlyMemory<char>>("PredictedName").Select(v => v.ToString()).ToList();
        double byName = gold.Zip(predicted).Count(p => p.First.Label == p.Second) / (double)gold.Count;
        double evaluated = ml.MulticlassClassification.Evaluate(scored).MicroAccuracy;
        Assert.Equal(byName, evaluated, 10);
        Assert.True(byName > 0.55, $"a student of a teacher-labelled SST-2 store scores {byName:P1} on SST-2 dev");
    }

    [SharedDataFact]
    public void AStoreWhoseLabelsAreNotTheKeysFailsWithBothLists()
    {
        var ml = new MLContext(seed: 1);
        var store = new KnowledgeStore(["negative", "positive"],
            [KnowledgeEntry.Gold("a fine film", null, 1, 2), KnowledgeEntry.Gold("a dull film", null, 0, 2)]);
        var train = TestData.Sst2Train(ml, 13);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(train);
        var e = Assert.Throws<ArgumentException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            StoreData = store.ToDataView(ml), Epochs = 1,
        }).Fit(keyed));
        Assert.StartsWith("The knowledge store's labels [negative, positive] are not the training Label column's keys [0, 1];", e.Message);
    }
}
