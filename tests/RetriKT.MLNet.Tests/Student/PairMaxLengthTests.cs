using Microsoft.ML;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// A sentence-pair student with MaxLength 3 or 4 has no room for a token of each text ([CLS] a [SEP] b [SEP] needs 5):
/// the tokenizer estimator refused it, but the trainer builds its tokenizer itself and trained every pair as the same
/// ids ([CLS] [SEP] [SEP] at 3) without a word.
/// </summary>
public class PairMaxLengthTests
{
    [Theory]
    [InlineData(3)]
    [InlineData(4)]
    public void APairStudentWithNoRoomForATokenOfEachTextIsRefusedWhenBuilt(int maxLength)
    {
        var ml = new MLContext(seed: 1);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(
            new RetrievalClassifierTrainer.Options { SecondTextColumnName = "Text2", MaxLength = maxLength }));
        Assert.Contains($"MaxLength must be at least 5 for sentence pairs (room for [CLS], a token of each text and two [SEP]), found {maxLength}.", e.Message);
        // One text needs only [CLS] a [SEP], and a pair of 5 has its token of each text.
        ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options { MaxLength = maxLength });
        ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options { SecondTextColumnName = "Text2", MaxLength = 5 });
    }
}
