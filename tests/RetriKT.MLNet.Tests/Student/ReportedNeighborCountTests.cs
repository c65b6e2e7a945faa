using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// A prediction's scores do not depend on how many neighbours it reports. The embedding search asked for
/// max(k, reported) entries and p_knn voted over the first k of them; an approximate index's first k of a larger search
/// are not always its top k (an HNSW beam that reached fewer entries than asked is answered by an exact scan), so
/// <c>Predict(text, neighbors: 200)</c>, <c>Explain(text, neighbors: 200)</c> and a wide <c>Neighbors</c> column scored
/// some rows otherwise than <c>Predict(text)</c> and a PredictionEngine.
/// </summary>
public class ReportedNeighborCountTests
{
    [SharedDataFact]
    public void ScoresAreTheSameWhateverNumberOfNeighboursIsReported()
    {
        var ml = new MLContext(seed: 1);
        var train = TestData.Sst2Train(ml);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 32, Epochs = 2, BatchSize = 8, RetrievalWeight = 0.5,
        }).Fit(keyMap.Transform(train));
        var labels = student.LabelNames.ToList();
        // 4,000 GLUE sentences read by a 32-row vocabulary: many share one embedding, which an HNSW graph reaches badly.
        var added = new KnowledgeStore(labels, TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "train.tsv")).Take(4000).Select(r =>
        {
            var soft = new float[labels.Count];
            soft[labels.IndexOf(r.Label)] = 1;
            return new KnowledgeEntry(r.Text, null, labels.IndexOf(r.Label), soft, 1, KnowledgeSource.Unlabeled);
        }));
        using var grown = student.WithAddedKnowledge(added);
        using var hnsw = grown.WithIndex(RetrieverIndexKind.Hnsw);
        var texts = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(300).Select(r => r.Text).ToList();
        foreach (var model in new[] { grown, hnsw })
        {
            var batch = model.PredictBatch(texts);
            for (int i = 0; i < texts.Count; i++)
            {
                Assert.Equal(batch[i], model.Predict(texts[i], neighbors: 3).Scores);
                Assert.Equal(batch[i], model.Predict(texts[i], neighbors: 200).Scores);
                Assert.Equal(batch[i], model.Explain(texts[i], neighbors: 200).Prediction.Scores);
            }
        }
    }
}
